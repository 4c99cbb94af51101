"""Allegro (Musaelian et al., "Learning local equivariant representations for large-scale atomistic dynamics",
Nat. Commun. 14, 579 (2023)) as a flax module on e3nn-jax.

Allegro is strictly local and edge-centred. For every edge ij (centre i = receiver, neighbour j = sender) it
carries two tracks:

* an invariant scalar latent x_ij (the "latent"), and
* equivariant tensor features V_ij with `num_tensor_features` channels of irreps l = 0..l_max.

Layer k computes the environment of the centre, Gamma_i = sum_j w_k(x_ij) * Y(r_ij) / sqrt(avg_num_neighbors),
takes the channel-wise tensor product V_ij (x) Gamma_i, feeds its invariant 0e outputs together with x_ij to a
latent MLP and forms the next V_ij from its tensor outputs. Two layouts of these layers exist (`architecture`):
nequip-allegro 0.8's (qallegro.nn.allegro_reference, used by every experiment config) and the residual layout of
qallegro's first potentials, written below: a residual latent update multiplied by the cutoff (so the latent
vanishes smoothly at r_max) and a linear mixing of the tensor outputs into the next V_ij. With
`tp_path_channel_coupling` (nequip-allegro 0.8's option of the same name, on in its published configs), every path
(l1, l2) -> l_out of the tensor product is multiplied, channel by channel, by a trainable weight before the paths
are combined. A readout MLP maps the final latent to an edge
energy; edge energies sum onto their centre and a per-species scale gives the atomic energy. The per-species
shift is added, and atomic energies summed to E, outside this float32 network, in float64
(`qallegro.potential.graph`).

Only invariant (0e) quantities ever enter an MLP, so the energy is E(3)-invariant for any weights.
"""

from __future__ import annotations

from typing import Optional, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qallegro.nn.allegro_reference import reference_atom_energies
from qallegro.nn.mlp import MLP
from qallegro.nn.radial import bessel_basis, polynomial_cutoff
from qallegro.nn.tensor_linear import TensorLinear, produced_irreps
from qallegro.nn.tensor_product import channelwise_tensor_product, couple_paths

#: The two layouts of Allegro's layers (the `architecture` field): nequip-allegro 0.8's, and the residual layout of
#: qallegro's first potentials, kept so that they load and reproduce their numbers.
ARCHITECTURES = ("nequip-allegro-0.8", "qallegro-residual")


def tensor_irreps(l_max: int, parity: bool) -> e3nn.Irreps:
    """Irreps carried by each tensor channel: l = 0..l_max with the spherical-harmonic parity (-1)^l, or, with
    `parity=True` (nequip's "o3_full"), both parities for every l."""
    if parity:
        return e3nn.Irreps([(1, (l, p)) for l in range(l_max + 1) for p in (1, -1)])
    return e3nn.Irreps.spherical_harmonics(l_max)


class Allegro(nn.Module):
    """Allegro energy model: per-edge geometry -> per-atom energies (eV).

    Attributes:
        num_species: number of species; nodes carry an index into the model's species list.
        r_max: cutoff radius in Å.
        l_max: highest angular momentum of the spherical harmonics and tensor features.
        num_layers: number of Allegro (tensor-product) layers, >= 1.
        num_tensor_features: channels per irrep in the tensor track.
        two_body_mlp: widths of the two-body MLP; its last width is the latent size.
        latent_mlp: hidden widths of each layer's latent MLP (its output is the latent size).
        readout_mlp: hidden widths of the edge-energy readout (output 1).
        num_bessel: number of Bessel radial functions; cutoff_p: exponent of the polynomial cutoff.
        parity: keep both parities in the tensor track (see `tensor_irreps`).
        avg_num_neighbors: normaliser of the environment sum (mean neighbours per atom, from training data).
        species_scale, species_shift: per-species energy scale (eV) and shift (eV/atom), from training data;
            fixed, not trained (as nequip's defaults).
        activation: nonlinearity of the MLPs.
        tp_path_channel_coupling: trainable path-channel weights in every layer's tensor product, as nequip-allegro
            0.8's ``tp_path_channel_coupling`` (see `path_channel_weights`). Off by default so that potentials
            saved without it (their model config lacks the key) load with their parameters and numbers unchanged;
            the experiment configs turn it on, as the reference's configs do.
        architecture: the layout of the layers, one of `ARCHITECTURES`. "nequip-allegro-0.8" is the reference's
            (qallegro.nn.allegro_reference: species-pair embedding, bias-free forward-normalised MLPs, a dense
            scalar track, paths summed per irrep); the experiment configs use it. "qallegro-residual" (described
            above) is the default so that potentials saved before the field existed load unchanged.
    """

    num_species: int
    r_max: float = 5.0
    l_max: int = 2
    num_layers: int = 2
    num_tensor_features: int = 16
    two_body_mlp: Sequence[int] = (32, 64, 128)
    latent_mlp: Sequence[int] = (128,)
    readout_mlp: Sequence[int] = (32,)
    num_bessel: int = 8
    cutoff_p: float = 6.0
    parity: bool = False
    avg_num_neighbors: float = 1.0
    species_scale: Optional[Sequence[float]] = None
    species_shift: Optional[Sequence[float]] = None
    activation: str = "silu"
    tp_path_channel_coupling: bool = False
    architecture: str = "qallegro-residual"

    #: Where a variant's extra block acts on the edge latent: "two_body" (after the two-body MLP), "latent"
    #: (after every layer's latent update, one block per layer) or "readout" (before the readout MLP);
    #: None for plain Allegro.
    block_position: Optional[str] = None

    def edge_block(self, x: jnp.ndarray, name: str) -> jnp.ndarray:
        """The variants' extra block: (E, d) invariant edge latent -> (E, d) residual update. Subclasses
        (qallegro.nn.variants) define it; plain Allegro has none."""
        raise NotImplementedError(f"{type(self).__name__} defines no edge block")

    def path_channel_weights(self, layer: int, num_paths: int, dtype) -> jnp.ndarray:
        """Layer `layer`'s path-channel weights, (num_tensor_features, num_paths), paths in the order of the
        tensor product's output (qallegro.nn.tensor_product.channelwise_path_labels).

        As in nequip-allegro 0.8 (allegro.nn._strided.Contracter with path_channel_coupling): one weight per channel
        and path in every layer, the last (scalar-only) layer included, drawn from U(-sqrt 3, sqrt 3) (unit
        variance, so each path's output keeps its variance on average) and no further normalisation; the
        Clebsch-Gordan coefficients carry e3nn's "component" normalisation in both codes.

        Here the weighted paths are then mixed by `TensorLinear` and the latent MLP's first layer, which already
        have a weight per (channel, path): the coupling does not enlarge the function space, it reparametrises it
        (a per-path, per-channel gain shared by the tensor and scalar tracks), as in the reference's training.
        """
        def init(key, shape, dtype):
            return jax.random.uniform(key, shape, dtype, -np.sqrt(3.0), np.sqrt(3.0))

        return self.param(f"tp_path_channel_weights_{layer}", init, (self.num_tensor_features, num_paths), dtype)

    def _maybe_block(self, x, cutoff, position: str, index: int = 0):
        if self.block_position is None or position != self.block_position:
            return x
        # Residual and multiplied by the cutoff, so the latent still vanishes smoothly at r_max.
        return x + cutoff * self.edge_block(x, f"{position}_block_{index}")

    def _residual_atom_energies(self, vectors, lengths, node_species, senders, receivers, edge_mask):
        """Unscaled atomic energies (N,) of the "qallegro-residual" layout (arguments as
        `qallegro.nn.allegro_reference.reference_atom_energies`)."""
        num_nodes = node_species.shape[0]
        C = self.num_tensor_features
        dtype = vectors.dtype
        cutoff = (polynomial_cutoff(lengths, self.r_max, self.cutoff_p) * edge_mask).astype(dtype)[:, None]
        radial = bessel_basis(lengths, self.num_bessel, self.r_max)

        # Two-body latent from the species pair and the radial basis.
        one_hot = jax.nn.one_hot(node_species, self.num_species, dtype=dtype)
        x = jnp.concatenate([one_hot[receivers], one_hot[senders], radial], axis=-1)
        x = MLP(self.two_body_mlp, self.activation, activate_final=True, name="two_body_mlp")(x) * cutoff
        x = self._maybe_block(x, cutoff, "two_body")
        latent_size = x.shape[-1]

        # Tensor track in the channels-last layout (E, components, C): see qallegro.nn.tensor_product.
        sh_irreps = e3nn.Irreps.spherical_harmonics(self.l_max)
        Y = e3nn.spherical_harmonics(sh_irreps, vectors, normalize=True, normalization="component").array

        def weighted_harmonics(x, name):
            # One weight per (channel, l), shared by the 2l+1 components of that l: (E, dim, C).
            w = nn.Dense(C * (self.l_max + 1), use_bias=False, name=name)(x).reshape(-1, C, self.l_max + 1)
            return jnp.concatenate([Y[:, l * l:(l + 1) ** 2, None] * w[:, None, :, l] for l in range(self.l_max + 1)],
                                   axis=1)

        V, v_irreps = weighted_harmonics(x, "tensor_embedding"), sh_irreps
        out_irreps = tensor_irreps(self.l_max, self.parity)
        out_filter = [str(ir) for _, ir in out_irreps]
        norm = 1.0 / jnp.sqrt(jnp.asarray(self.avg_num_neighbors, dtype))

        for layer in range(self.num_layers):
            env = jax.ops.segment_sum(weighted_harmonics(x, f"env_weights_{layer}"), receivers,
                                      num_segments=num_nodes) * norm  # (N, dim, C)
            last = layer == self.num_layers - 1
            # The last layer feeds only the scalar track: its tensor product computes the 0e paths alone.
            paths, tp = channelwise_tensor_product(V, env[receivers], v_irreps, sh_irreps,
                                                   ["0e"] if last else out_filter)  # (E, paths dim, C)
            if self.tp_path_channel_coupling:
                # After the product, outside its hand-written VJP: one elementwise multiply (see tensor_product).
                tp = couple_paths(tp, paths, self.path_channel_weights(layer, paths.num_irreps, dtype))
            scalar_rows = np.concatenate([np.arange(sl.start, sl.stop) for (_, ir), sl in zip(paths, paths.slices())
                                          if ir == e3nn.Irrep("0e")])
            # (E, C * n_scalar_paths), channel-major as e3nn's `filter("0e")` of the (E, C, paths) layout.
            scalars = jnp.swapaxes(tp[:, scalar_rows, :], 1, 2).reshape(tp.shape[0], -1)
            update = MLP(tuple(self.latent_mlp) + (latent_size,), self.activation, name=f"latent_mlp_{layer}")(
                jnp.concatenate([x, scalars], axis=-1))
            # Residual update that keeps the variance and, through the cutoff, keeps x -> 0 at r_max.
            x = (x + update * cutoff) / jnp.sqrt(2.0).astype(dtype)
            x = self._maybe_block(x, cutoff, "latent", layer)
            if not last:
                V = TensorLinear(str(paths), str(out_irreps), C, name=f"tensor_linear_{layer}")(tp)
                v_irreps = produced_irreps(paths, out_irreps)  # with parity, 0o appears from layer 2 on

        x = self._maybe_block(x, cutoff, "readout")
        # Zero-initialised output: the untrained model predicts the fitted per-species shifts exactly.
        edge_energy = MLP(tuple(self.readout_mlp) + (1,), self.activation, zero_init_final=True,
                          name="readout_mlp")(x)[:, 0]
        edge_energy = edge_energy * cutoff[:, 0]
        # Normalised sum (Allegro's normalize_edge_energy_sum): the energy's sensitivity to the readout bias
        # does not grow with the number of neighbours.
        return jax.ops.segment_sum(edge_energy, receivers, num_segments=num_nodes) * norm

    @nn.compact
    def __call__(self, edge_vectors: jnp.ndarray, node_species: jnp.ndarray, senders: jnp.ndarray,
                 receivers: jnp.ndarray, edge_mask: jnp.ndarray) -> jnp.ndarray:
        """Atomic energies.

        Args:
            edge_vectors: (E, 3) r_ij = x_j - x_i (+ periodic shift) in Å.
            node_species: (N,) int species indices.
            senders, receivers: (E,) neighbour j and centre i of each edge.
            edge_mask: (E,) bool, False for padding edges (their vectors may be anything, even zero).
        Returns:
            (N,) atomic energies in eV *without* the per-species shift: scale_Z * network output (0 for an atom
            without neighbours). `qallegro.potential.graph.atomic_energies` adds the shift mu_Z in float64.
        """
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.block_position not in (None, "two_body", "latent", "readout"):
            raise ValueError(f"block_position must be two_body, latent or readout, got {self.block_position!r}")
        dtype = edge_vectors.dtype

        # Padding edges get a safe vector beyond r_max: no NaN in the gradient of |r| at r = 0, and the
        # cutoff zeroes all they contribute.
        safe = jnp.zeros_like(edge_vectors).at[:, 0].set(2.0 * self.r_max)
        vectors = jnp.where(edge_mask[:, None], edge_vectors, safe)
        lengths = jnp.linalg.norm(vectors, axis=-1)
        if self.architecture == "nequip-allegro-0.8":
            atom_energy = reference_atom_energies(self, vectors, lengths, node_species, senders, receivers, edge_mask)
        elif self.architecture == "qallegro-residual":
            atom_energy = self._residual_atom_energies(vectors, lengths, node_species, senders, receivers, edge_mask)
        else:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")

        scale = jnp.asarray(self.species_scale if self.species_scale is not None else [1.0] * self.num_species,
                            dtype)
        # The per-species shift (species_shift, ~1000 eV/atom for carbon) is not added here: the energy assembly
        # (qallegro.potential.graph.atomic_energies) adds it in float64, outside this float32 network.
        return atom_energy * scale[node_species]
