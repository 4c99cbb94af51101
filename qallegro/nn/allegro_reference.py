"""Allegro's layers as nequip-allegro 0.8 builds them (``allegro.model.AllegroModel``), the reference architecture.

What differs from the residual layout of `qallegro.nn.allegro` (architecture "qallegro-residual"):

* **Two-body embedding** (``TwoBodyBesselScalarEmbed``): a Bessel basis sin(n pi r/r_max) / (pi r/r_max), n = 1..8,
  times the polynomial cutoff, projected linearly to `two_body_mlp[0]` features and multiplied elementwise by the
  concatenated embeddings of the centre's and the neighbour's species; then a bias-free MLP (hidden widths
  `two_body_mlp[1:-1]`) to the `two_body_mlp[-1]` scalar features.
* **No cutoff on the latents and no biases anywhere**: every MLP is bias-free and SiLU(0) = 0, so every edge
  quantity is a product with the cutoff-weighted radial basis and vanishes smoothly at r_max.
* **Forward-normalised weights** (`ScaledMLP`): unit-variance weights scaled by gain / sqrt(fan_in) in the forward
  pass, which sets the effective step size of Adam per layer.
* **Dense (DenseNet) scalar track**: layer k's latent MLP reads the concatenation of the two-body features and
  every earlier layer's scalar output, plus the 0e output of its tensor product; the readout MLP reads the
  concatenation of all of them (two-body + one per layer).
* **Tensor track without a mixing layer**: the environment weights of the next layer are a slice of the latent
  MLP's output; the tensor product's paths are weighted (per channel and path with `tp_path_channel_coupling`,
  per path otherwise; U(-sqrt 3, sqrt 3)) and summed per output irrep, which *is* the next layer's tensor feature.
  Irreps no later layer can use are pruned (so the last layers compute only what reaches the scalar output).
* **Readout**: edge energies summed onto the centre, divided by sqrt(avg_num_neighbors) and by sqrt 2 (the 2 for
  dE/dr_i, which collects both r_ij and r_ji).

With matched settings the parameter count equals the reference's (tests/test_reference_architecture.py).
"""

from __future__ import annotations

from typing import List

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qallegro.nn.mlp import ScaledDense, ScaledMLP
from qallegro.nn.radial import polynomial_cutoff
from qallegro.nn.tensor_product import channelwise_tensor_product, couple_paths


def layer_irreps(l_max: int, parity: bool, num_layers: int) -> List[e3nn.Irreps]:
    """The irreps of the tensor track before every layer and after the last: num_layers + 1 entries, the first being
    the spherical harmonics, the last "0e". Each layer's output holds the allowed irreps its product can reach, and
    irreps from which no later product reaches the scalar output are pruned (nequip-allegro's ``Allegro_Module``).
    """
    sh = e3nn.Irreps.spherical_harmonics(l_max)
    allowed = ([e3nn.Irrep(l, p) for l in range(l_max + 1) for p in (1, -1)] if parity
               else [ir for _, ir in sh])

    def reachable(arg, ir):
        return any(ir in ir1 * ir2 for _, ir1 in arg for _, ir2 in sh)

    irreps = [sh]
    for layer in range(num_layers):
        targets = [e3nn.Irrep("0e")] if layer == num_layers - 1 else allowed
        # e3nn's sorted order, which is the order of the tensor product's outputs (`sum_paths`).
        irreps.append(e3nn.Irreps([(1, ir) for ir in targets if reachable(irreps[-1], ir)]).sort().irreps)
    # Backwards: keep an input irrep only if it has a path to something the next output keeps.
    pruned = [irreps[-1]]
    for arg in reversed(irreps[:-1]):
        out = {ir for _, ir in pruned[-1]}
        pruned.append(e3nn.Irreps([(1, ir1) for _, ir1 in arg if any(o in ir1 * ir2 for _, ir2 in sh for o in out)]))
    return list(reversed(pruned))


def weighted_channels(Y: jnp.ndarray, weights: jnp.ndarray, irreps: e3nn.Irreps, channels: int) -> jnp.ndarray:
    """``MakeWeightedChannels``: (E, irreps.dim) harmonics and (E, channels * num_irreps) weights (index
    c * num_irreps + r) -> (E, irreps.dim, channels), every component of irrep r scaled by weights[c, r]."""
    w = weights.reshape(weights.shape[0], channels, irreps.num_irreps)
    component_irrep = np.repeat(np.arange(irreps.num_irreps), [ir.dim for _, ir in irreps])
    return Y[:, :, None] * jnp.swapaxes(w, 1, 2)[:, component_irrep, :]


def sum_paths(tp: jnp.ndarray, paths: e3nn.Irreps) -> jnp.ndarray:
    """(E, paths.dim, C) with several paths per irrep (e.g. 3x0e+4x1o+4x2e) -> (E, simplified dim, C), the paths of
    each irrep summed (e.g. 0e+1o+2e)."""
    blocks = [tp[:, sl, :].reshape(tp.shape[0], mul, ir.dim, tp.shape[-1]).sum(axis=1)
              for (mul, ir), sl in zip(paths, paths.slices())]
    return jnp.concatenate(blocks, axis=1)


def reference_atom_energies(module, vectors: jnp.ndarray, lengths: jnp.ndarray, node_species: jnp.ndarray,
                            senders: jnp.ndarray, receivers: jnp.ndarray, edge_mask: jnp.ndarray) -> jnp.ndarray:
    """Unscaled atomic energies of `module` (a `qallegro.nn.allegro.Allegro` with architecture
    "nequip-allegro-0.8"), called inside its compact ``__call__`` so that the submodules and parameters created here
    are the module's.

    Args:
        vectors: (E, 3) edge vectors r_ij in Å, padding edges already replaced by a safe vector beyond r_max.
        lengths: (E,) their norms.
        node_species, senders, receivers, edge_mask: as `Allegro.__call__`.
    Returns:
        (N,) atomic energies before the per-species scale and shift (dimensionless network output).
    Raises:
        ValueError: an odd `two_body_mlp[0]` (it is split between the centre's and the neighbour's species).
    """
    m = module
    dtype = vectors.dtype
    num_nodes, C = node_species.shape[0], m.num_tensor_features
    embed_dim = m.two_body_mlp[0]
    if embed_dim % 2:
        raise ValueError(f"two_body_mlp[0] (the species-pair embedding size) must be even, got {embed_dim}")

    # Two-body scalar embedding.
    u = lengths / m.r_max
    n = jnp.arange(1, m.num_bessel + 1, dtype=dtype)
    cutoff = (polynomial_cutoff(lengths, m.r_max, m.cutoff_p) * edge_mask).astype(dtype)[:, None]
    radial = n * jnp.sinc(u[:, None] * n) * cutoff  # sinc(t) = sin(pi t) / (pi t)
    species_init = nn.initializers.normal(1.0)
    center = nn.Embed(m.num_species, embed_dim // 2, embedding_init=species_init, param_dtype=dtype,
                      name="center_embed")(node_species[receivers])
    neighbour = nn.Embed(m.num_species, embed_dim // 2, embedding_init=species_init, param_dtype=dtype,
                         name="neighbor_embed")(node_species[senders])
    x = jnp.concatenate([center, neighbour], axis=-1) * ScaledDense(embed_dim, name="basis_linear")(radial)
    x = ScaledMLP(tuple(m.two_body_mlp[1:]), m.activation, name="two_body_mlp")(x)
    x = m._maybe_block(x, cutoff, "two_body")
    F = x.shape[-1]

    # Two-body tensor embedding: weighted spherical harmonics.
    sh = e3nn.Irreps.spherical_harmonics(m.l_max)
    Y = e3nn.spherical_harmonics(sh, vectors, normalize=True, normalization="component").array
    n_env = C * sh.num_irreps
    V = weighted_channels(Y, ScaledDense(n_env, name="tensor_embedding")(x), sh, C)
    irreps = layer_irreps(m.l_max, m.parity, m.num_layers)

    projection = ScaledDense(F + n_env, name="first_layer_projection")(x)
    features, env_weights = [projection[:, :F]], projection[:, F:]
    norm = 1.0 / jnp.sqrt(jnp.asarray(m.avg_num_neighbors, dtype))
    for layer in range(m.num_layers):
        last = layer == m.num_layers - 1
        env = jax.ops.segment_sum(weighted_channels(Y, env_weights, sh, C), receivers,
                                  num_segments=num_nodes) * norm  # (N, sh.dim, C)
        paths, tp = channelwise_tensor_product(V, env[receivers], irreps[layer], sh,
                                               [str(ir) for _, ir in irreps[layer + 1]])
        shape = (C, paths.num_irreps) if m.tp_path_channel_coupling else (paths.num_irreps,)
        w = m.param(f"tp_path_weights_{layer}", _unit_uniform, shape, dtype)
        V = sum_paths(couple_paths(tp, paths, jnp.broadcast_to(w, (C, paths.num_irreps))), paths)
        if [ir for _, ir in paths] != [ir for _, ir in irreps[layer + 1]]:
            raise AssertionError(f"layer {layer}: product irreps {paths} are not {irreps[layer + 1]}")
        scalars = V[:, 0, :]  # the 0e output, first in e3nn's order
        latents = ScaledMLP(tuple(m.latent_mlp) + (F + (0 if last else n_env),), m.activation,
                            name=f"latent_mlp_{layer}")(jnp.concatenate(features + [scalars], axis=-1))
        features.append(m._maybe_block(latents[:, :F], cutoff, "latent", layer))
        env_weights = latents[:, F:]

    x = m._maybe_block(jnp.concatenate(features, axis=-1), cutoff, "readout")
    edge_energy = ScaledMLP(tuple(m.readout_mlp) + (1,), m.activation, name="readout_mlp")(x)[:, 0]
    edge_energy = jnp.where(edge_mask, edge_energy, 0.0)
    return jax.ops.segment_sum(edge_energy, receivers, num_segments=num_nodes) * norm / jnp.sqrt(2.0).astype(dtype)


def _unit_uniform(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, -np.sqrt(3.0), np.sqrt(3.0))
