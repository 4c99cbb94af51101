"""Data-parallel training: 2 CPU devices (a subprocess with XLA's host device count set to 2) give the same
parameters as one device, and the batch really is split over both devices."""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    sys.path.insert(0, "tests")
    from allegro_helpers import random_crystal, random_molecule, small_model
    from qallegro.data.graphs import batch_and_pad, structure_to_graph
    from qallegro.data.structure import make_structure
    from qallegro.train.config import TrainConfig
    from qallegro.train.step import init_train_state, make_steps
    from qallegro.train.parallel import make_mesh, make_parallel_train_step, put_sharded, split_batch

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    species = [1, 6, 8]
    model, params = small_model(species, noise=0.1, l_max=1, num_layers=1)
    graphs = []
    for k in range(5):  # 5 labelled molecules of different sizes: groups of 3 and 2 graphs
        s = random_molecule(rng, n_atoms=4 + k)
        s = make_structure(s.Z, s.positions, energy=rng.normal(), forces=rng.normal(size=(s.n_atoms, 3)))
        graphs.append(structure_to_graph(s, 3.5, species))
    cfg = TrainConfig(learning_rate=1e-2, energy_weight=3.0, forces_weight=10.0, seed=0)
    optimizer, train_step, _ = make_steps(model, cfg, compute_stress=False)
    mesh = make_mesh(2)
    parallel_step = make_parallel_train_step(model, cfg, False, mesh, optimizer)
    single = parallel = init_train_state(params, optimizer)
    single_batch = batch_and_pad(graphs, n_graph=6)
    sharded = put_sharded(split_batch(graphs, 2), mesh)
    devices_used = len({s.device for s in sharded.nodes["positions"].addressable_shards})
    losses = []
    for step in range(3):
        single, loss1 = train_step(single, single_batch)
        parallel, loss2 = parallel_step(parallel, sharded)
        losses.append((float(loss1), float(loss2)))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(single.params), jax.tree.leaves(parallel.params)))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(single.params), jax.tree.leaves(params)))
    # A batch smaller than the mesh: the empty group is filled with a zero-weight graph.
    tiny = split_batch(graphs[:1], 2)
    print(json.dumps({"diff": diff, "moved": moved, "losses": losses, "devices_used": devices_used,
                      "tiny_has_forces": np.asarray(tiny.globals["has_forces"]).tolist(),
                      "params_devices": len(jax.tree.leaves(parallel.params)[0].devices())}))
""")


def test_two_devices_match_one_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu",  # (conftest's flags kept)
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices_used"] == 2 and result["params_devices"] == 2
    assert result["moved"] > 1e-3  # the steps did change the parameters
    assert result["diff"] < 1e-10, result  # float64: identical up to summation order
    for single, parallel in result["losses"]:
        assert abs(single - parallel) <= 1e-10 * abs(single)
    assert result["tiny_has_forces"] == [[1.0, 0.0], [0.0, 0.0]]
