"""Is qallegro's "nequip-allegro-0.8" architecture the reference's Allegro? Same weights -> same numbers.

Builds nequip-allegro 0.8's `AllegroModel` in the peer's environment (.venv-peer, `make peer-venv`) in float64,
with parity, three layers and path-channel coupling (so the irreps pruning and every kind of path are exercised),
copies its weights into qallegro's `Allegro(architecture="nequip-allegro-0.8")` and compares energies and forces
on random molecules. The peer's weights and outputs are written to tests/data/nequip_allegro_0.8_reference.npz,
which tests/test_reference_architecture.py checks on every run (no torch needed there).

    python -m experiments.benchmarks.reference_parity        # regenerate the fixture and compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "data", "nequip_allegro_0.8_reference.npz")
PEER_PYTHON = os.path.join(ROOT, ".venv-peer", "bin", "python")
TYPE_NAMES = ["H", "C", "O"]
SPECIES = [1, 6, 8]
#: Small but complete: parity (odd irreps and pruning), 3 layers, coupling, distinct per-species scale/shift.
PEER_HPARAMS = dict(r_max=4.0, l_max=2, parity=True,
                    radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8,
                                           "bessel_trainable": False, "polynomial_cutoff_p": 6},
                    radial_chemical_embed_dim=8, scalar_embed_mlp_hidden_layers_depth=1,
                    scalar_embed_mlp_hidden_layers_width=16, num_layers=3, num_scalar_features=16,
                    num_tensor_features=4, allegro_mlp_hidden_layers_depth=1, allegro_mlp_hidden_layers_width=16,
                    readout_mlp_hidden_layers_depth=1, readout_mlp_hidden_layers_width=8,
                    tp_path_channel_coupling=True, avg_num_neighbors=5.0,
                    per_type_energy_scales={"H": 1.5, "C": 2.0, "O": 0.5},
                    per_type_energy_shifts={"H": -1.0, "C": -2.0, "O": -3.0})
#: The same model in qallegro's config keys.
QALLEGRO_CONFIG = dict(family="allegro", architecture="nequip-allegro-0.8", r_max=4.0, l_max=2, parity=True,
                       num_layers=3, num_tensor_features=4, two_body_mlp=[8, 16, 16], latent_mlp=[16],
                       readout_mlp=[8], num_bessel=8, cutoff_p=6.0, activation="silu",
                       tp_path_channel_coupling=True, num_species=3, avg_num_neighbors=5.0,
                       species_scale=[1.5, 2.0, 0.5], species_shift=[-1.0, -2.0, -3.0])


def run_peer_worker(worker: str, spec: Dict[str, Any], workdir: str) -> Dict[str, np.ndarray]:
    """Run `worker` (a script beside this file) in .venv-peer on `spec` (written as JSON into `workdir`); its
    output arrays (the .npz it writes)."""
    if not os.path.exists(PEER_PYTHON):
        raise SystemExit(f"{PEER_PYTHON} not found: run `make peer-venv` first")
    path = os.path.join(workdir, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    out = os.path.join(workdir, "peer.npz")
    subprocess.run([PEER_PYTHON, os.path.join(os.path.dirname(os.path.abspath(__file__)), worker), path, out],
                   check=True)
    return dict(np.load(out))


def random_molecules(count: int = 3, seed: int = 0) -> List[Dict[str, Any]]:
    """`count` random molecules of 6-12 atoms (types 0..2) with no pair closer than 0.9 Å."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n = int(rng.integers(6, 13))
        positions = rng.uniform(0.0, 3.5, size=(n, 3))
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1) + 10 * np.eye(n)
        if distances.min() > 0.9:
            out.append({"types": rng.integers(0, 3, n).tolist(), "positions": positions.tolist()})
    return out


def write_fixture(path: str = FIXTURE, seed: int = 0) -> None:
    """Run the worker in .venv-peer and store its weights, path labels and outputs (+ the structures) in `path`."""
    if not os.path.exists(PEER_PYTHON):
        raise SystemExit(f"{PEER_PYTHON} not found: run `make peer-venv` first")
    structures = random_molecules()
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "spec.json")
        json.dump({"seed": seed, "type_names": TYPE_NAMES, "hparams": PEER_HPARAMS, "structures": structures},
                  open(spec, "w"))
        raw = os.path.join(tmp, "peer.npz")
        subprocess.run([PEER_PYTHON, os.path.join(os.path.dirname(__file__), "reference_parity_worker.py"), spec,
                        raw], check=True)
        arrays = dict(np.load(raw))
    for n, s in enumerate(structures):
        arrays[f"types/{n}"] = np.array(s["types"])
        arrays[f"positions/{n}"] = np.array(s["positions"])
    np.savez_compressed(path, **arrays)


def params_from_reference(arrays: Dict[str, np.ndarray], model) -> Dict[str, Any]:
    """qallegro parameters holding the reference's weights (keys "param/<torch state-dict name>").

    Linear weights are stored (fan_in, fan_out) in both codes; the tensor products' path weights are permuted
    from the reference's instruction order ("paths/<layer>" labels "ir1,ir2,ir_out") to qallegro's path order.
    """
    import jax
    import jax.numpy as jnp

    from qallegro.nn.allegro_reference import layer_irreps
    from qallegro.nn.tensor_product import channelwise_path_labels

    def w(name):
        return jnp.asarray(arrays["param/model.func." + name])

    def mlp(prefix, count):
        # torch Sequential indices 0, 2, ... are the linear layers (activations in between).
        return {f"dense_{k}": {"weight": w(f"{prefix}.{2 * k}.weight")} for k in range(count)}

    embed = "radial_chemical_embed.type_embed"
    params = {"center_embed": {"embedding": w(f"{embed}.center_embed.weight")},
              "neighbor_embed": {"embedding": w(f"{embed}.neighbor_embed.weight")},
              "basis_linear": {"weight": w(f"{embed}.basis_linear.mlp.0.weight")},
              "two_body_mlp": mlp("scalar_embed_mlp.mlp_module.mlp", len(model.two_body_mlp) - 1),
              "tensor_embedding": {"weight": w("tensor_embed.env_embed_linear.mlp.0.weight")},
              "first_layer_projection": {"weight": w("allegro.first_layer_env_embed_projection.mlp.0.weight")},
              "readout_mlp": mlp("edge_readout.mlp_module.mlp", len(model.readout_mlp) + 1)}
    irreps = layer_irreps(model.l_max, model.parity, model.num_layers)
    sh = str(irreps[0])
    for layer in range(model.num_layers):
        params[f"latent_mlp_{layer}"] = mlp(f"allegro.latents.{layer}.mlp", len(model.latent_mlp) + 1)
        ours = [f"{a},{b},{c}" for a, b, c in channelwise_path_labels(
            str(irreps[layer]), sh, tuple(str(ir) for _, ir in irreps[layer + 1]))]
        theirs = [str(x) for x in arrays[f"paths/{layer}"]]
        if sorted(ours) != sorted(theirs):
            raise ValueError(f"layer {layer}: paths differ: qallegro {ours}, reference {theirs}")
        weights = w(f"allegro.tps.{layer}.weights")
        params[f"tp_path_weights_{layer}"] = weights[..., np.array([theirs.index(p) for p in ours])]
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), {"params": params})


def compare(path: str = FIXTURE) -> Dict[str, float]:
    """Largest |difference| of energies (eV) and forces (eV/Å) between the fixture and qallegro (float64)."""
    import jax

    with jax.enable_x64(True):  # scoped: a test calling this must not switch the whole process to float64
        return _compare(path)


def _compare(path: str) -> Dict[str, float]:
    import jax

    from qallegro.data.graphs import batch_and_pad, structure_to_graph
    from qallegro.data.structure import make_structure
    from qallegro.models import build_model
    from qallegro.potential import energy_forces_stress

    arrays = dict(np.load(path))
    model = build_model(dict(QALLEGRO_CONFIG))
    params = params_from_reference(arrays, model)
    types = []
    while f"energy/{len(types)}" in arrays:
        types.append(arrays[f"types/{len(types)}"])
    structures = [make_structure([SPECIES[t] for t in types[n]], arrays[f"positions/{n}"]) for n in range(len(types))]
    # every structure in one padded batch: one compilation (eager float64 execution took minutes)
    graph = batch_and_pad([structure_to_graph(s, model.r_max, SPECIES) for s in structures])
    out = jax.jit(lambda p, g: energy_forces_stress(model, p, g, compute_stress=False))(params, graph)
    energies, forces = np.asarray(out["energy"]), np.asarray(out["forces"])
    worst, first = {"energy": 0.0, "forces": 0.0}, 0
    for n, t in enumerate(types):
        worst["energy"] = max(worst["energy"], abs(float(energies[n]) - float(arrays[f"energy/{n}"])))
        error = np.abs(forces[first:first + len(t)] - arrays[f"forces/{n}"]).max()
        worst["forces"] = max(worst["forces"], float(error))
        first += len(t)
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-only", action="store_true", help="compare against the existing fixture")
    args = parser.parse_args(argv)
    if not args.compare_only:
        write_fixture()
    worst = compare()
    print(f"largest |qallegro - nequip-allegro 0.8| (float64): energy {worst['energy']:.3e} eV, "
          f"forces {worst['forces']:.3e} eV/Å")
    return 0


if __name__ == "__main__":
    sys.exit(main())
