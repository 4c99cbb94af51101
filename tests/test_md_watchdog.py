"""The MD watchdog and the md command's input checks: an exploding run stops with a named error at the first
failing step and keeps its last good frame; a bad argument or input leaves an earlier run's files byte-identical.

(A healthy 300 K NVE run passing the default watchdog: tests/test_potential_md.py::
test_nve_of_trained_aspirin_conserves_energy.)"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from allegro_helpers import SMALL_MODEL, small_model
from ase.io import read, write

from qallegro.data.structure import DataError
from qallegro.md import MDWatchdogError, Watchdog, build_system, run_md
from qallegro.md.dynamics import degrees_of_freedom, make_check, make_integrator
from qallegro.potential import Potential, save

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ASPIRIN_MODEL = os.path.join(DATA, "aspirin-allegro-cpu-6min.qallegro")
ASPIRIN = os.path.join(DATA, "aspirin.xyz")
SPECIES = [1, 6, 8]
TINY = dict(l_max=1, num_layers=1, num_tensor_features=4, two_body_mlp=[8, 16], latent_mlp=[16], readout_mlp=[8])
TINY_CONFIG = dict(SMALL_MODEL, num_species=3, species_scale=[1.3] * 3, species_shift=[-1.0, -1.5, -2.0], **TINY)


@pytest.fixture(scope="module")
def tiny():
    _, params = small_model(SPECIES, dtype=jnp.float32, noise=0.3, **TINY)
    return params, Potential(TINY_CONFIG, params, SPECIES, dtype="float32")


@pytest.fixture(scope="module")
def aspirin():
    return read(ASPIRIN)


def test_check_names_quantity_and_atom(tiny, aspirin):
    """The in-scan check on hand-made states: each quantity trips alone and names the right atom."""
    _, potential = tiny
    system = build_system(potential, aspirin.positions, aspirin.numbers)
    neighbors = system.allocate()
    init_fn, _ = make_integrator(system, "nve", 0.5, 300.0)
    state = init_fn(jax.random.PRNGKey(0), system.R, kT=0.0259, mass=system.masses, neighbor=neighbors)
    check = jax.jit(make_check(system, degrees_of_freedom(len(aspirin), "nve")))
    off = jnp.array([jnp.inf, jnp.inf], jnp.float32)
    everyone = jnp.ones(len(aspirin), bool)

    def run(state, limits=off):
        code, value, atom = check(state, neighbors, limits, everyone)
        return int(code), float(value), int(atom)

    assert run(state) == (0, 0.0, -1)
    force_norm = np.linalg.norm(np.asarray(state.force), axis=-1)
    code, value, atom = run(state, jnp.array([1e-3, jnp.inf], jnp.float32))
    assert (code, atom) == (2, int(np.argmax(force_norm))) and value == pytest.approx(force_norm.max(), rel=1e-5)
    code, value, atom = run(state, jnp.array([jnp.inf, 1.0], jnp.float32))
    assert code == 3 and atom == -1 and value > 1.0
    far = state.set(position=state.position.at[7].add(jnp.array([30.0, 0.0, 0.0])))
    code, value, atom = run(far)  # still listed (the list is from the old positions), no longer within r_max
    assert (code, atom) == (4, 7) and value > potential.r_max
    bad = state.set(force=state.force.at[12, 1].set(jnp.nan))
    assert run(bad)[0::2] == (1, 12)


def test_watchdog_stops_at_the_first_hot_step_and_keeps_the_last_good_frame(tiny, aspirin):
    """A temperature ceiling crossed between two logged steps: the error names that very step, and the last frame
    handed to the callback is the state one step earlier, identical to the unwatched run's."""
    _, potential = tiny
    system = build_system(potential, aspirin.positions, aspirin.numbers)
    steps = 40
    free = run_md(system, "nve", steps=steps, dt_fs=1.0, temperature_K=300.0, log_every=1, watchdog=None)
    temperature = np.array([row["temperature"] for row in free.thermo])
    assert np.ptp(temperature) > 1.0  # the molecule moves
    # a step inside a chunk at which the temperature exceeds that of every earlier step: with the ceiling between
    # the two, every earlier step passes and this one fails
    rises = [s for s in range(2, steps + 1)
             if temperature[s] > temperature[1:s].max() and s % 10 not in (0, 1)]
    assert rises
    hot = rises[-1]
    ceiling = 0.5 * (temperature[hot] + temperature[1:hot].max())
    frames = []
    with pytest.raises(MDWatchdogError, match=f"at step {hot} .*temperature") as err:
        run_md(system, "nve", steps=steps, dt_fs=1.0, temperature_K=300.0, log_every=10,
               watchdog=Watchdog(max_temperature_K=ceiling), keep_frames=False,
               callback=lambda row, positions, velocities: frames.append((row["step"], positions)))
    assert err.value.step == hot and err.value.quantity == "temperature" and err.value.last_good_step == hot - 1
    assert err.value.value == pytest.approx(temperature[hot], rel=1e-3)
    step, positions = frames[-1]
    assert step == hot - 1 and err.value.thermo[-1]["step"] == hot - 1
    np.testing.assert_allclose(positions, free.frames[hot - 1][0], atol=1e-5)


def test_md_dt_20_stops_with_a_named_error_and_the_last_good_frame(tmp_path):
    """The observed failure: aspirin at dt = 20 fs used to exit 0 at 222,000 K with atoms 12,000 Å apart."""
    from experiments.md import WATCHDOG_STATUS
    from experiments.run import main

    out = str(tmp_path / "md")
    status = main(["md", "--model", ASPIRIN_MODEL, "--structure", ASPIRIN, "--dt", "20", "--steps", "40",
                   "--log-every", "10", "--out", out])
    assert status == WATCHDOG_STATUS != 0  # not the bad-input status 2
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["status"] == "stopped by watchdog"
    error = summary["error"]
    assert error["quantity"] in ("temperature", "max_force", "isolated_atom", "energy_drift")
    assert error["value"] > error["limit"] or error["quantity"] == "isolated_atom"
    assert f"at step {error['step']}" in error["message"]
    rows = open(os.path.join(out, "thermo.csv")).read().splitlines()
    last_good = summary["last_good_step"]
    assert last_good < error["step"] and int(rows[-1].split(",")[0]) == last_good
    frames = read(os.path.join(out, "trajectory.extxyz"), index=":")
    last = frames[-1]
    assert last.info["step"] == last_good and last.info["temperature"] < 5000.0
    assert np.all(np.isfinite(last.positions)) and np.ptp(last.positions, axis=0).max() < 15.0  # still a molecule

    # --no-watchdog: the user's choice, the same run goes on past the step the watchdog stopped and exits 0
    free = str(tmp_path / "md-free")
    steps = 10 * (error["step"] // 10 + 1)
    assert main(["md", "--model", ASPIRIN_MODEL, "--structure", ASPIRIN, "--dt", "20", "--steps", str(steps),
                 "--log-every", "10", "--out", free, "--no-watchdog"]) == 0
    summary = json.load(open(os.path.join(free, "summary.json")))
    assert summary["status"] == "done" and summary["watchdog"] is None and "error" not in summary
    assert summary["last_good_step"] == steps > error["step"]


def _old_run(out):
    os.makedirs(out)
    contents = {"thermo.csv": b"step,time_fs\n0,0.0\n100,50.0\n", "trajectory.extxyz": b"old frames\n" * 50,
                "summary.json": b'{"status": "done"}'}
    for name, data in contents.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    return contents


@pytest.mark.parametrize("bad", [
    ["--dt", "0"], ["--dt", "nan"], ["--steps", "0"], ["--temperature", "-5"], ["--log-every", "0"],
    ["--friction", "0"], ["--tau", "-1"], ["--max-force", "0"], ["--trajectory", "out.pdb"],
    ["--repeat", "1", "0", "1"],
    ["--structure", "missing.xyz"], ["--structure", "overlap.xyz"], ["--structure", "nan.xyz"],
    ["--structure", "unknown_species.xyz"], ["--model", "missing.qallegro"], ["--ensemble", "nve"],
])
def test_bad_md_input_leaves_earlier_outputs_untouched(tmp_path, tiny, aspirin, bad):
    """Every bad option or input is refused before any output is opened, also with --overwrite; a good run into
    an --out with earlier results is refused without --overwrite (last case)."""
    from experiments.md import add_arguments
    from experiments.md import main as md_main

    params, _ = tiny
    model = str(tmp_path / "tiny.qallegro")
    save(model, TINY_CONFIG, params, SPECIES)
    broken = aspirin.copy()
    if "overlap.xyz" in bad:
        broken.positions[3] = broken.positions[5]
    elif "nan.xyz" in bad:
        broken.positions[4, 2] = np.nan
    elif "unknown_species.xyz" in bad:
        broken.numbers[2] = 29
    structure = str(tmp_path / "structure.xyz")
    write(structure, broken)
    out = str(tmp_path / "md")
    contents = _old_run(out)
    args = {"--model": model, "--structure": structure}
    for flag in ("--model", "--structure"):
        if flag in bad:
            args[flag] = str(tmp_path / bad[1]) if bad[1].startswith("missing") else structure
    extra = [] if bad[0] in args else bad
    overwrite = [] if bad == ["--ensemble", "nve"] else ["--overwrite"]
    argv = ["md", "--model", args["--model"], "--structure", args["--structure"], "--steps", "2", "--log-every", "1",
            "--out", out] + extra + overwrite
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv[1:])
    with pytest.raises((ValueError, DataError, FileNotFoundError)) as err:
        md_main(args)
    if not overwrite:
        assert "--overwrite" in str(err.value)
    for name, data in contents.items():
        with open(os.path.join(out, name), "rb") as f:
            assert f.read() == data, name
    assert sorted(os.listdir(out)) == sorted(contents)


def test_build_system_applies_the_potential_api_checks(tiny, aspirin):
    """MD starts from the same checks as the Potential API: non-finite positions and overlapping atoms."""
    _, potential = tiny
    positions = aspirin.positions.copy()
    positions[4, 2] = np.nan
    with pytest.raises(DataError, match="atom 4"):
        build_system(potential, positions, aspirin.numbers)
    positions = aspirin.positions.copy()
    positions[3] = positions[5]
    with pytest.raises(DataError, match="atoms? 3"):
        build_system(potential, positions, aspirin.numbers)
