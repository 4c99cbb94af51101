"""pytest fixtures shared by the test modules."""

import os

# XLA's backend optimisation level 0 for every program the suite compiles (here and in the processes it starts,
# which inherit the environment): the tests compile hundreds of small programs and run each a few times, and at
# level 0 the suite takes about 40 % less CPU (tests/test_equivariance.py: 152 -> 85 CPU s; test_training.py: 93 ->
# 58). The numbers checked do not depend on it (round-off level; the tolerances are set by the physics), and the
# benchmarks and the commands keep XLA's default. Set before JAX creates its backend; QALLEGRO_TEST_XLA_DEFAULT=1
# keeps the default (to run the suite as users compile).
if os.environ.get("QALLEGRO_TEST_XLA_DEFAULT", "0") in ("", "0") and \
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

# Commands called in-process (experiments.run.main) switch the user's persistent compilation cache on; tests keep
# it off, so no test reads programs from earlier runs.
os.environ.setdefault("QALLEGRO_COMPILATION_CACHE", "off")

# One fresh JAX compilation cache per test session instead, shared by the xdist workers and the processes the
# tests start (JAX reads JAX_COMPILATION_CACHE_DIR): many tests compile the same programs (the tiny model's
# training and evaluation steps, the same layer in several tests), and a program found there is the executable
# that compiling it again would give, so nothing checked changes. Created empty, removed when the session ends
# (pytest_sessionfinish); QALLEGRO_TEST_SESSION_CACHE=0 switches it off.
_SESSION_CACHE = None
if os.environ.get("QALLEGRO_TEST_SESSION_CACHE", "1") not in ("", "0") and \
        "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _SESSION_CACHE = tempfile.mkdtemp(prefix="qallegro-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE  # xdist workers and subprocesses inherit it
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


#: The test files that take longest, longest first (summed test seconds with `make test` on a clean clone, idle
#: 2-core machine, 2026-12-03: 200, 182, 153, 119, 83, 72, 66, 50, 50, 48, 47, 44, 42, 36, 35 s; 1471 s in all).
#: `make test` hands whole files to the two xdist workers (--dist loadfile: a file's module fixtures are built once
#: and its tests share one process's compiled programs) in collection order (--no-loadscope-reorder), so starting
#: with these is longest-first scheduling and the two workers end together instead of one waiting on a long file
#: it picked up last. Only the order changes, never what runs.
LONGEST_FILES = ("test_notebooks", "test_study_resume", "test_faults_training", "test_multiprocess", "test_forces",
                 "test_quantum_pennylane", "test_variants", "test_equivariance", "test_hpo", "test_potential_md",
                 "test_training", "test_datasets", "test_hpo_machines", "test_quantum_simulator",
                 "test_quantum_analysis")


def pytest_collection_modifyitems(session, config, items):
    """Files of LONGEST_FILES first, in that order; every other file after them, in collection order."""
    rank = {name: k for k, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the order within a file stays


@pytest.fixture(autouse=True)
def _restore_x64_mode():
    """The command line switches JAX's x64 mode on for the whole process (experiments.config.enable_x64): a test
    that calls it in-process must not change the dtypes of the tests that run after it in the same worker."""
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture
def x64():
    """Run the test with 64-bit floats (tight tolerances), restoring the global setting afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def tiny_config(tmp_path):
    """A dataset config YAML over a 12/6-frame slice of the embedded aspirin data and a tiny model."""
    import os

    import numpy as np

    data = os.path.join(os.path.dirname(__file__), "..", "experiments", "data")
    for split, n in (("train", 12), ("test", 6)):
        f = np.load(os.path.join(data, f"rmd17_aspirin_{split}_01.npz"))
        np.savez(tmp_path / f"{split}.npz", **{k: f[k][:n] if k != "nuclear_charges" else f[k]
                                                for k in ("nuclear_charges", "coords", "energies", "forces")})
    (tmp_path / "tiny.yaml").write_text(
        "dataset: {train: train.npz, test: test.npz, n_train: 8, n_val: 4}\n"
        "model: {r_max: 4.0, l_max: 1, num_layers: 1, num_tensor_features: 4, two_body_mlp: [8, 16],\n"
        "        latent_mlp: [16], readout_mlp: [8]}\n"
        "training: {batch_size: 4, eval_batch_size: 6, max_minutes: null}\n")
    return str(tmp_path / "tiny.yaml")


@pytest.fixture
def jax_compilation_cache(tmp_path):
    """JAX's persistent compilation cache in a temporary directory, for this test only.

    A program compiled again from new jitted functions (a resumed run, the next trial of a study) is then
    loaded instead of compiled: the same executable, so nothing checked changes. JAX opens the cache directory
    once per process (at the first compilation after a directory is set), so the cache is reset on entry, to
    use this test's directory, and on exit, with the previous settings restored, so later tests use the
    session's cache again."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's compilation cache (the controller's; xdist workers inherit its folder)."""
    if _SESSION_CACHE is not None and not hasattr(session.config, "workerinput"):
        import shutil

        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
