"""Energies in float64 where it matters while the network runs in float32 (issue 15; nequip's model_dtype float32
with default_dtype float64).

* Under x64 a float32-config training step and evaluation step run no float64 matrix product: float64 is confined
  to the geometry (positions, edge vectors, forces: trailing dimension <= 3) and the energy assembly (per-atom and
  per-graph energies, labels, loss), so x64 costs no network speed.
* A 4000-atom Cu–Li cell: the float32 sum of its ~-12,900 eV misses by meV, the float64 sum of the same float32
  network matches a float64 network to < 0.1 meV and the exact (math.fsum) sum of its atomic energies to 1e-6 eV.
* The committed aspirin potential (float32, saved before this change) gives the same forces under x64, and an
  energy that differs only by the float32 summation (meV).
"""

import math
import os

import ase.build
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from ase.io import read

from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.data.loader import GraphLoader
from qallegro.data.readers import read_rmd17_npz
from qallegro.data.structure import make_structure
from qallegro.models import build_model
from qallegro.potential import load
from qallegro.potential.graph import atomic_energies, edge_vectors, graph_energies
from qallegro.train.config import TrainConfig
from qallegro.train.setup import init_params, prepare
from qallegro.train.step import init_train_state, make_steps

HERE = os.path.dirname(os.path.abspath(__file__))
ASPIRIN = os.path.join(HERE, "..", "experiments", "data", "rmd17_aspirin_train_01.npz")
ASPIRIN_MODEL = os.path.join(HERE, "data", "aspirin-allegro-cpu-6min.qallegro")
SMALL = dict(r_max=4.0, l_max=2, num_layers=2, num_tensor_features=4, two_body_mlp=[8, 16], latent_mlp=[16],
             readout_mlp=[8], tp_path_channel_coupling=True)
MATRIX_PRIMITIVES = ("dot_general", "conv_general_dilated")


def _architectures():
    """Every layer layout of Allegro that this checkout has (the `architecture` field, where it exists)."""
    import qallegro.nn.allegro as allegro

    return [{"architecture": a} for a in getattr(allegro, "ARCHITECTURES", ())] or [{}]


def _equations(jaxpr):
    """Every equation of `jaxpr`, those of nested jaxprs (jit, custom_vjp, scan, ...) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if hasattr(sub, "eqns"):
                    yield from _equations(sub)
                elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from _equations(sub.jaxpr)


def _float64_report(fn, *args):
    """(float64 matrix products, float64 arrays wider than 3 in a trailing dimension, float32 matrix products)
    of the traced `fn(*args)`."""
    f64_matmul, f64_wide, f32_matmul = [], [], 0
    for eqn in _equations(jax.make_jaxpr(fn)(*args).jaxpr):
        for var in eqn.outvars:
            dtype, shape = str(var.aval.dtype), tuple(getattr(var.aval, "shape", ()))
            if eqn.primitive.name in MATRIX_PRIMITIVES:
                if dtype == "float64":
                    f64_matmul.append((eqn.primitive.name, shape))
                elif dtype == "float32":
                    f32_matmul += 1
            if dtype == "float64" and any(d > 3 for d in shape[1:]):
                f64_wide.append((eqn.primitive.name, shape))
    return f64_matmul, f64_wide, f32_matmul


@pytest.mark.parametrize("family, extra", [("allegro", a) for a in _architectures()]
                         + [("allegro-mlp", {}), ("allegro-qdi", {"n_qubits": 2, "qdi_depth": 1})])
def test_float32_network_under_x64_runs_no_float64_matrix_product(family, extra):
    with jax.enable_x64(True):
        structures = read_rmd17_npz(ASPIRIN, max_frames=6)
        prepared = prepare(structures, dict(SMALL, family=family, **extra), seed=0, dtype=jnp.float32)
        cfg = TrainConfig(batch_size=3, energy_weight=10.0)
        optimizer, train_step, eval_step = make_steps(prepared.model, cfg, compute_stress=False)
        state = init_train_state(prepared.params, optimizer)
        batch = next(GraphLoader(prepared.train_graphs, 3, shuffle=False).batches(0))
        assert batch.nodes["positions"].dtype == np.float64 and batch.globals["energy"].dtype == np.float64

        f64_matmul, f64_wide, f32_matmul = _float64_report(train_step, state, batch)
        assert f64_matmul == [] and f64_wide == [], (f64_matmul, f64_wide)
        assert f32_matmul > 10  # the network is there, in float32
        new_state, loss = jax.eval_shape(train_step, state, batch)
        assert {x.dtype for x in jax.tree.leaves(new_state.params)} == {jnp.dtype(jnp.float32)}
        assert loss.dtype == jnp.float64  # labels and the loss's energy term stay float64

        correction = jnp.zeros(prepared.model.num_species, jnp.float64)
        f64_matmul, f64_wide, f32_matmul = _float64_report(eval_step, state.params, batch, correction)
        assert f64_matmul == [] and f64_wide == [] and f32_matmul > 10, (f64_matmul, f64_wide)
        _, pred = jax.eval_shape(eval_step, state.params, batch, correction)
        assert pred["energy"].dtype == jnp.float64


def _culi_cell(repeat=10, seed=0):
    """fcc Cu with a quarter of the atoms Li, rattled: 4 repeat^3 atoms."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.numbers[np.random.default_rng(seed).permutation(len(atoms))[: len(atoms) // 4]] = 3
    atoms.rattle(0.05, seed=seed)
    return make_structure(atoms.numbers, atoms.positions, cell=atoms.cell[:], pbc=True)


def test_float64_sum_of_a_4000_atom_cell():
    """E = sum_i (e_i + mu_Zi) over 4000 atoms with DFT-like shifts (Li -1.9, Cu -3.7 eV/atom).

    The network's part e_i is kept at a trained model's residual size (~0.03 eV/atom): what remains between a
    float32 and a float64 network is then the float32 network's own relative error (~3e-7 of sum e_i, 0.03 meV
    here), not the summation."""
    species = [3, 29]
    structure = _culi_cell()
    assert structure.n_atoms == 4000
    config = dict(SMALL, family="allegro", r_max=3.5, l_max=1, num_layers=1, num_species=2,
                  avg_num_neighbors=12.0, species_scale=[0.5, 0.5], species_shift=[-1.9, -3.7])
    model = build_model(config)
    graph = batch_and_pad([structure_to_graph(structure, config["r_max"], species)])
    energy = jax.jit(lambda p, g: graph_energies(model, p, g.nodes["positions"], g))
    with jax.enable_x64(True):
        params = init_params(model, graph, seed=0, dtype=jnp.float64)
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))  # the readout starts at zero: perturb all
        params64 = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype)
                                             for p, k in zip(leaves, keys)])
        params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params64)
        e_reference = float(energy(params64, graph)[0])  # float64 network, float64 sum
        e_mixed = energy(params32, graph)  # float32 network, float64 sum
        assert e_mixed.dtype == jnp.float64
        per_atom = jax.jit(lambda p, g: atomic_energies(
            model, p, edge_vectors(g.nodes["positions"], g), g.nodes["species"], g.senders, g.receivers,
            jraph.get_edge_padding_mask(g)))(params32, graph)
        per_atom = np.asarray(per_atom, dtype=np.float64)[: structure.n_atoms]
    with jax.enable_x64(False):  # float32 throughout
        e_float32 = float(energy(jax.tree.map(np.asarray, params32), graph)[0])
    e_mixed = float(e_mixed[0])

    network_part = per_atom - np.array(config["species_shift"])[np.asarray(graph.nodes["species"])[:4000]]
    assert 0.005 < np.abs(network_part).mean() < 0.1  # the regime described above
    assert abs(e_mixed - math.fsum(per_atom)) < 1e-6  # the sum itself is exact to float64
    assert abs(e_mixed - e_reference) < 1e-4  # < 0.1 meV from the float64 network
    assert abs(e_float32 - e_reference) > 1e-3  # the float32 sum misses by more than 1 meV
    assert abs(e_float32 - e_reference) > 20 * abs(e_mixed - e_reference)


def test_saved_float32_potential_under_x64_same_forces_energy_by_the_sum_only():
    atoms = read(os.path.join(HERE, "data", "aspirin.xyz"))
    with jax.enable_x64(False):
        e32, f32 = load(ASPIRIN_MODEL).energy_and_forces(atoms.positions, atoms.numbers)
    assert e32.dtype == jnp.float32
    with jax.enable_x64(True):
        potential = load(ASPIRIN_MODEL)
        assert potential.dtype == "float32"
        e64, f64 = potential.energy_and_forces(atoms.positions, atoms.numbers)
        assert e64.dtype == jnp.float64
        e_reference, _ = load(ASPIRIN_MODEL, dtype="float64").energy_and_forces(atoms.positions, atoms.numbers)
    np.testing.assert_allclose(np.asarray(f64), np.asarray(f32), atol=1e-4)  # eV/Å
    assert abs(float(e64) - float(e32)) < 5e-3  # the float32 sum of -17,618 eV: ulp 2 meV
    assert abs(float(e64) - float(e_reference)) < 1e-4  # the float64 network, to < 0.1 meV
