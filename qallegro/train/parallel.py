"""Data-parallel training over a device mesh (jax.sharding + shard_map), on one machine or many.

A training batch of B structures is cut into D contiguous groups (D = devices on the 1-D mesh axis "data"),
each padded to the same budget and stacked along a leading axis of size D that is sharded over the mesh. Each
device evaluates energies/forces of its group and the gradient of its share of the loss; shares use the
*global* label counts, so

    loss = lambda_E * sum_d SSE_E,d / N_E + lambda_F * sum_d SSE_F,d / N_F (+ stress)

is exactly the single-device loss of the whole batch, and the gradients are summed with `psum` (an all-reduce).
Parameters, optimiser state and EMA are replicated; the optimiser update is the same as in
`qallegro.train.step.make_steps`, so D devices give the single-device parameters up to float summation order.

Multi-process (several machines, or several processes on one): call `initialize_distributed()`
(jax.distributed.initialize; `python -m experiments.run train --num-processes N --process-id K --coordinator
HOST:PORT` does it) at start-up in every process; the mesh then spans `jax.devices()` of all processes. Every
process builds the same global batch (same data, same seed) and `jax.make_array_from_callback` hands each process
only the groups of its own devices. Outside the compiled step every process keeps its own copy of the (replicated)
training state as ordinary process-local arrays (`process_local`), so validation, the plateau schedule and the
EMA are the single-process code. Process 0 alone owns the run directory: it writes the metrics, checkpoints and
results, and on `--resume` it reads the checkpoint and broadcasts it to the others (`restore_on_process_zero`), so
the other processes need no shared filesystem. Every step is compiled ahead and starts with a `barrier` of the
coordination service, so that no process waits in the gradient all-reduce for one still compiling or writing a
checkpoint (gloo, JAX's CPU collectives, gives up after 30 s).
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import jraph
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qallegro.data.graphs import graph_shape, padding_budget
from qallegro.data.loader import GraphLoader
from qallegro.train.loss import error_sums, loss_predictions, weighted_loss
from qallegro.train.step import apply_gradients

AXIS = "data"
_RESTORES = itertools.count()  # names of the barriers of `restore_on_process_zero`
COUNT_KEYS = ("n_energy", "n_forces", "n_stress")


def cluster_from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The launcher that started this process as one of several: "slurm" (srun with more than one task) or "ompi"
    (Open MPI's mpirun with more than one rank), from the variables they set; None otherwise (a single process,
    also a one-task SLURM job). `jax.distributed.initialize()` without arguments reads the same variables."""
    env = os.environ if environ is None else environ
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "ompi"
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    return None


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, **kwargs) -> None:
    """Join a multi-process JAX runtime (jax.distributed.initialize); call once per process before any other JAX
    call. With no arguments JAX detects SLURM / Open MPI / Cloud TPU settings; otherwise give the coordinator's
    "host:port" (process 0's machine; the port must be free there and reachable from the others), the number of
    processes and this process's id (0 .. num_processes - 1). CPU devices exchange gradients over gloo (TCP).

    Raises:
        ValueError: a process id outside 0 .. num_processes - 1.
    """
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is outside 0 .. {num_processes - 1} (--num-processes "
                         f"{num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # At exit every process waits for the others; process 0 still evaluates and writes the run after training
    # while the others are done (JAX's default wait is 5 min).
    kwargs.setdefault("shutdown_timeout_seconds", 24 * 3600)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kwargs)


def is_primary() -> bool:
    """True in process 0 (and in a single-process run): the process that writes the run directory."""
    return jax.process_index() == 0


def process_local(tree: Any) -> Any:
    """This process's copy of a replicated pytree: each `jax.Array` that spans other processes' devices becomes
    its shard on this process's first device (no copy); every other leaf is returned as is."""
    def local(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        return x

    return jax.tree.map(local, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A process-local pytree (every process holds the same values) as arrays replicated over the whole `mesh`,
    built from copies on this process's devices (no communication)."""
    sharding = NamedSharding(mesh, P())
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        return jax.make_array_from_single_device_arrays(x.shape, sharding, [jax.device_put(x, d) for d in mine])

    return jax.tree.map(put, tree)


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Wait until every process has reached the barrier `name` (a name used once per run), through the
    coordination service of jax.distributed rather than a device collective: a device collective (gloo on CPU)
    gives up after 30 s, which a process still compiling or writing a checkpoint can exceed. One process:
    returns at once. Uses orbax's `multihost.sync_global_processes`.

    Raises:
        jax's runtime error after `timeout_s` seconds (a process that never arrives).
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    multihost.sync_global_processes(name, timeout=timeout_s, processes=set(range(jax.process_count())))


def restore_on_process_zero(restore: Callable[[], Any], template: Any) -> Any:
    """`restore()` in process 0, its result broadcast to every process (one process: just `restore()`).

    `template` is a pytree of the same structure, shapes and dtypes (the other processes' placeholder). If
    `restore()` raises in process 0, the others raise a RuntimeError naming it instead of waiting forever.

    Raises:
        whatever `restore()` raises (process 0); RuntimeError (the other processes).
    """
    if jax.process_count() == 1:
        return restore()
    from jax.experimental import multihost_utils

    value, error = template, None
    if is_primary():
        try:
            value = restore()
        except Exception as err:  # told to the others below, then raised here
            error = err
    barrier(f"qallegro-restore-{next(_RESTORES)}")
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if failed:
        if error is not None:
            raise error
        raise RuntimeError("process 0 could not restore the checkpoint (its error is in process 0's output)")
    return multihost_utils.broadcast_one_to_all(value)


def make_mesh(n_devices: Optional[int] = None) -> Mesh:
    """1-D mesh (axis "data") over the first `n_devices` of `jax.devices()` (all, by default; all hosts').

    Raises:
        ValueError: more devices requested than exist.
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else int(n_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n_devices} devices, have {len(devices)}: {devices}")
    return Mesh(np.array(devices[:n]), (AXIS,))


def _zero_weight(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """A copy of a graph whose labels carry no weight (fills a group when a batch has fewer graphs than
    devices)."""
    g = dict(graph.globals)
    for key in ("has_energy", "has_forces", "has_stress"):
        g[key] = np.zeros_like(g[key])
    return graph._replace(globals=g)


def split_batch(graphs: Sequence[jraph.GraphsTuple], n_shards: int, n_graph: Optional[int] = None,
                sizes_per_doubling: int = 4):
    """Stack `graphs` into `n_shards` padded groups of identical shape.

    Args:
        graphs: single-graph GraphsTuples (numpy), e.g. from structure_to_graph.
        n_shards: number of groups D.
        n_graph: graph budget per group including padding (default ceil(B / D) + 1); keep it fixed in a run.
    Returns:
        GraphsTuple whose arrays have a leading axis D (a batch of D padded batches).
    """
    groups = [list(g) for g in np.array_split(np.arange(len(graphs)), n_shards)]
    n_graph = n_graph or math.ceil(len(graphs) / n_shards) + 1
    batches = []
    for idx in groups:
        members = [graphs[k] for k in idx] or [_zero_weight(graphs[0])]
        batches.append(jraph.batch_np(members))
    n_node = padding_budget(max(int(b.n_node.sum()) for b in batches) + 1, sizes_per_doubling=sizes_per_doubling)
    n_edge = padding_budget(max(int(b.n_edge.sum()) for b in batches), sizes_per_doubling=sizes_per_doubling)
    padded = [jraph.pad_with_graphs(b, n_node=n_node, n_edge=n_edge, n_graph=n_graph) for b in batches]
    return jax.tree.map(lambda *xs: np.stack(xs), *padded)


def put_sharded(stacked, mesh: Mesh):
    """Place a stacked batch (leading axis = mesh size) on the mesh, one group per device; in a multi-host run
    each process materialises only its own devices' groups."""
    sharding = NamedSharding(mesh, P(AXIS))

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, stacked)


def sharded_batches(loader: GraphLoader, mesh: Mesh, epoch: int = 0, start: int = 0) -> Iterator:
    """The batches of `loader.batches(epoch, start)` (same order, same members), each split over the mesh.

    The groups are padded on the budget ladder of `qallegro.data.graphs.padding_budget` (a few shapes per run),
    not to the loader's fixed budget, which is sized for a whole batch on one device."""
    n = mesh.devices.size
    n_graph = math.ceil(loader.batch_size / n) + 1
    for idx in loader.plan(epoch)[start:]:
        stacked = split_batch([loader.graphs[k] for k in idx], n, n_graph)
        loader.shapes_seen.add(graph_shape(jax.tree.map(lambda x: x[0], stacked)))
        yield put_sharded(stacked, mesh)


def make_parallel_train_step(model, cfg, compute_stress: bool, mesh: Mesh, optimizer):
    """jit-compiled train_step(state, stacked_graph) -> (state, loss) with the batch sharded over `mesh`.

    Same update as `qallegro.train.step.make_steps`' train_step (Adam with clipping, EMA); `state` is
    replicated. When the mesh spans several processes, `state` (and the loss) are taken and returned as this
    process's copy (`process_local`). For finite-shot QDI the shot noise key is folded with the device index.
    """
    stochastic = getattr(model, "shots", None) is not None
    base_key = jax.random.PRNGKey(cfg.seed)

    def local(params, graph, step):
        graph = jax.tree.map(lambda x: x[0], graph)  # this device's group
        rng = None
        if stochastic:
            rng = jax.random.fold_in(jax.random.fold_in(base_key, step), jax.lax.axis_index(AXIS))

        def share(p):
            pred = loss_predictions(model, p, graph, cfg.forces_weight, cfg.stress_weight, compute_stress, rng)
            sums = error_sums(pred, graph)
            counts = {k: jax.lax.psum(sums[k], AXIS) for k in COUNT_KEYS if k in sums}
            return weighted_loss({**sums, **counts}, cfg.energy_weight, cfg.forces_weight, cfg.stress_weight)

        # Differentiate w.r.t. a device-varying copy of the replicated parameters, so the gradient is this
        # device's share only; the explicit psum is the all-reduce. (Differentiating w.r.t. the replicated
        # parameters directly would already sum over devices.)
        local_params = jax.lax.pcast(params, AXIS, to="varying")
        loss, grads = jax.value_and_grad(share)(local_params)
        return jax.lax.psum(loss, AXIS), jax.lax.psum(grads, AXIS)

    sharded_grad = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()))
    replicated = NamedSharding(mesh, P())

    def train_step(state, graph):
        loss, grads = sharded_grad(state.params, graph, state.step)
        return apply_gradients(state, grads, optimizer, cfg), loss

    step = jax.jit(train_step, out_shardings=(replicated, replicated))
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return step

    compiled, count = {}, itertools.count()

    def multi_process_step(state, graph):
        # Several processes: the state goes in and comes out as this process's copy (see the module docstring).
        state = replicate(state, mesh)
        avals = tuple(x.aval for x in jax.tree.leaves((state, graph)))  # shapes, dtypes, weak types
        if avals not in compiled:  # compiled ahead, so that the processes start the step's collectives together
            compiled[avals] = step.lower(state, graph).compile()
        barrier(f"qallegro-train-step-{next(count)}")
        state, loss = compiled[avals](state, graph)
        return process_local(state), process_local(loss)

    return multi_process_step
