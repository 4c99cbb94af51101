"""Property-based tests (hypothesis) of the edges where outside input enters: the data readers (npz, extxyz), the
`Potential` API, the QDI layer and the command line's argument handling.

The property is the same everywhere: an input either gives a valid result -- finite numbers, equal to what was
given (no silent coercion such as Z = 6.5 read as carbon) -- or raises one of the project's named errors
(`qallegro.errors`) whose message names the file, frame, atom or option at fault. Never another exception type,
a NaN or a quietly changed value.

Cheap by construction: few examples each (derandomized, so every run tries the same inputs), one tiny compiled
potential shared by all examples, positions that give at most three padded graph shapes, circuits of <= 3 qubits.
"""

import contextlib
import os
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest
from allegro_helpers import SMALL_MODEL, small_model
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from qallegro.data.readers import read_extxyz, read_rmd17_npz, read_structures
from qallegro.data.structure import DataError
from qallegro.data.units import KCAL_MOL_TO_EV
from qallegro.errors import ConfigError, known_errors

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])
NAMED = known_errors()

# --- values: mostly good, sometimes bad ---------------------------------------------------------------------------
# Good values come from a numpy generator seeded by hypothesis (hypothesis's own floats favour 0.0 and other
# boundary values: atoms would pile up at the origin); the bad ones are placed by hypothesis.
BAD_Z = st.sampled_from([6.5, 0, -3, 119, 200, float("nan"), 1e30])
BAD_X = st.sampled_from([float("nan"), float("inf"), -float("inf")])


def rarely(draw, one_in: int) -> bool:
    """True about once in `one_in` draws (False is the simpler case that hypothesis shrinks towards)."""
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


@st.composite
def maybe_bad_array(draw, shape, low, high, bad, integers=None):
    """A float64 array of `shape`, uniform in [low, high) (or drawn from `integers`), with 0-2 entries (mostly 0)
    replaced by values of the strategy `bad`."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = int(np.prod(shape))
    values = (rng.choice(integers, n) if integers is not None else rng.uniform(low, high, n)).astype(np.float64)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2])) if n else 0):
        values[draw(st.integers(0, n - 1))] = draw(bad)
    return values.reshape(shape)


@contextlib.contextmanager
def temporary_file(name):
    with tempfile.TemporaryDirectory() as d:
        yield os.path.join(d, name)


def assert_names(err: Exception, *words):
    for word in words:
        assert word in str(err), (word, str(err))


# --- readers -------------------------------------------------------------------------------------------------------
@st.composite
def rmd17_arrays(draw):
    """The four rMD17 arrays, with random bad fields: non-integer or unknown Z, non-finite coordinates, forces or
    energies, mismatched shapes, a missing key, no frames or no atoms, text where numbers belong."""
    n_frames = draw(st.integers(0, 3))
    n_atoms = draw(st.integers(0, 4))
    Z = draw(maybe_bad_array((n_atoms,), 0, 0, BAD_Z, integers=[1, 6, 8]))
    if draw(st.booleans()):
        Z = Z.astype(np.int64) if np.isfinite(Z).all() and (Z == np.round(Z)).all() and np.abs(Z).max(
            initial=0) < 1e9 else Z
    arrays = {"nuclear_charges": Z,
              "coords": draw(maybe_bad_array((n_frames, n_atoms, 3), -4, 4, BAD_X)),
              "energies": draw(maybe_bad_array((n_frames,), -1e4, 1e4, BAD_X)),
              "forces": draw(maybe_bad_array((n_frames, n_atoms, 3), -10, 10, BAD_X))}
    damage = draw(st.sampled_from(["none"] * 8 + ["shape", "missing", "text", "scalar", "2d_Z"]))
    key = draw(st.sampled_from(sorted(arrays)))
    if damage == "shape":
        arrays[key] = arrays[key][..., :-1] if arrays[key].ndim > 1 and arrays[key].shape[-1] else \
            np.concatenate([arrays[key].ravel(), [1.0]])
    elif damage == "missing":
        del arrays[key]
    elif damage == "text":
        arrays[key] = np.array(["x"] * max(arrays[key].size, 1))
    elif damage == "scalar":
        arrays[key] = np.float64(1.0)
    elif damage == "2d_Z":
        arrays["nuclear_charges"] = np.tile(arrays["nuclear_charges"], (2, 1))
    return arrays


@FUZZ
@given(rmd17_arrays())
@example({"nuclear_charges": np.array([6.5, 1.0]), "coords": np.array([[[0.0, 0, 0], [1.1, 0, 0]]]),
          "energies": np.array([-1.0]), "forces": np.zeros((1, 2, 3))})  # Z = 6.5 must not be read as carbon
def test_rmd17_reader_gives_exact_structures_or_a_data_error(arrays):
    with temporary_file("fuzz.npz") as path:
        np.savez(path, **arrays)
        try:
            structures = read_rmd17_npz(path)
        except DataError as err:
            event("DataError")
            assert_names(err, "fuzz.npz")
            return
    event("read")
    Z, coords = arrays["nuclear_charges"], arrays["coords"]
    assert len(structures) == len(arrays["energies"]) > 0
    for k, s in enumerate(structures):  # exactly what the file says, in eV and Å
        assert s.Z.dtype.kind == "i" and np.array_equal(s.Z, Z) and ((1 <= s.Z) & (s.Z <= 118)).all()
        assert np.array_equal(s.positions, coords[k]) and np.isfinite(s.positions).all()
        assert s.energy == pytest.approx(arrays["energies"][k] * KCAL_MOL_TO_EV, rel=1e-12)
        assert np.allclose(s.forces, arrays["forces"][k] * KCAL_MOL_TO_EV, rtol=1e-12, atol=0)
        assert np.isfinite(s.energy) and np.isfinite(s.forces).all()


@FUZZ
@given(st.binary(min_size=0, max_size=300), st.sampled_from(["x.npz", "x.extxyz", "x.xyz.gz"]))
def test_garbage_bytes_are_a_data_error_naming_the_file(data, name):
    with temporary_file(name) as path:
        with open(path, "wb") as f:
            f.write(data)
        try:
            structures = read_structures(path)
        except DataError as err:
            assert_names(err, name)
            return
    assert structures and all(np.isfinite(s.positions).all() for s in structures)


SYMBOLS = {"H": 1, "C": 6, "O": 8}


@st.composite
def extxyz_text(draw):
    """An extxyz file of 0-2 frames with random bad fields: unknown symbols, numbers as species, non-finite or
    non-numeric coordinates, forces or energies, a wrong atom count, frames without atoms."""
    frames, expected = [], []
    for _ in range(draw(st.integers(0, 2))):
        n = draw(st.integers(0, 4))
        symbols = [draw(st.sampled_from(["Xx", "6.5", "0", "c1"]) if rarely(draw, 12)
                        else st.sampled_from(list(SYMBOLS))) for _ in range(n)]
        pos = draw(maybe_bad_array((n, 3), -4, 4, BAD_X))
        forces = draw(maybe_bad_array((n, 3), -10, 10, BAD_X))
        energy = draw(st.sampled_from(["-12.5", "3.0", "-0.25"] * 3 + ["nan", "inf", "abc"]))
        count = n + draw(st.sampled_from([0] * 10 + [-1, 1]))
        lines = [str(count), f'Properties=species:S:1:pos:R:3:forces:R:3 energy={energy} pbc="F F F"']
        for a in range(n):
            x = [repr(float(v)) for v in pos[a]]
            if rarely(draw, 30):
                x[draw(st.integers(0, 2))] = "1.2.3"
            lines.append(" ".join([symbols[a]] + x + [repr(float(v)) for v in forces[a]]))
        frames.append("\n".join(lines) + "\n")
        expected.append((symbols, pos, forces, energy))
    return "".join(frames), expected


@FUZZ
@given(extxyz_text())
def test_extxyz_reader_gives_exact_structures_or_a_data_error(case):
    text, expected = case
    with temporary_file("fuzz.extxyz") as path:
        with open(path, "w") as f:
            f.write(text)
        try:
            structures = read_extxyz(path)
        except DataError as err:
            event("DataError")
            assert_names(err, "fuzz.extxyz")
            return
    event("read")
    assert len(structures) == len(expected) > 0
    for s, (symbols, pos, forces, energy) in zip(structures, expected):
        assert [int(z) for z in s.Z] == [SYMBOLS[x] for x in symbols]
        assert np.array_equal(s.positions, pos) and np.isfinite(s.positions).all()
        assert np.array_equal(s.forces, forces) and np.isfinite(s.forces).all()
        assert s.energy == float(energy) and np.isfinite(s.energy)


ARTIFACT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "aspirin-allegro-cpu-6min.qallegro")


@settings(FUZZ, max_examples=25)
@given(kind=st.sampled_from(["flip", "truncate", "insert"]), where=st.floats(0, 1), byte=st.integers(1, 255))
def test_damaged_potential_file_is_an_artifact_error_naming_it(kind, where, byte):
    """One byte changed, the file cut short or a byte inserted anywhere: refused with `ArtifactError`."""
    from qallegro.potential import ArtifactError, read_artifact

    with open(ARTIFACT, "rb") as f:
        blob = bytearray(f.read())
    at = min(int(where * len(blob)), len(blob) - 1)
    if kind == "flip":
        blob[at] ^= byte
    elif kind == "truncate":
        blob = blob[:at]
    else:
        blob[at:at] = bytes([byte])
    with temporary_file("damaged.qallegro") as path:
        with open(path, "wb") as f:
            f.write(blob)
        with pytest.raises(ArtifactError, match="damaged.qallegro"):
            read_artifact(path)


# --- Potential -------------------------------------------------------------------------------------------------
SPECIES = [1, 6, 8]
TINY = dict(l_max=1, num_layers=1, num_tensor_features=4, two_body_mlp=[8, 16], latent_mlp=[16], readout_mlp=[8])


@pytest.fixture(scope="module")
def potential():
    from qallegro.potential import Potential

    _, params = small_model(SPECIES, dtype=jnp.float32, noise=0.3, **TINY)
    config = dict(SMALL_MODEL, num_species=3, species_scale=[1.3] * 3, species_shift=[-1.0, -1.5, -2.0], **TINY)
    return Potential(config, params, SPECIES, dtype="float32")


@st.composite
def potential_inputs(draw):
    """1-5 atoms in an 8 Å box (r_max 3.5 Å: at most 20 edges, three padded shapes), with random bad fields:
    unknown or non-integer species, non-finite or overlapping positions, species and positions of different
    lengths."""
    n = draw(st.integers(1, 5))
    Z = [draw(st.sampled_from([3, 29, 6.5, 0, -1, 200]) if rarely(draw, 10) else st.sampled_from(SPECIES))
         for _ in range(n)]
    positions = draw(maybe_bad_array((n, 3), -3, 3, BAD_X))
    if n > 1 and rarely(draw, 6):  # an atom on top of another
        positions[1] = positions[0] + draw(st.sampled_from([0.0, 1e-5, 1e-4]))
    if rarely(draw, 20):
        Z = Z[:-1] if n > 1 else Z + [1]
    return np.array(Z), positions


@FUZZ
@given(potential_inputs())
def test_potential_gives_finite_energy_and_balanced_forces_or_a_data_error(potential, inputs):
    Z, positions = inputs
    try:
        energy, forces = potential.energy_and_forces(positions, Z)
    except DataError as err:
        event("DataError")
        assert_names(err, "Potential input")
        return
    event("evaluated")
    assert Z.dtype.kind == "i" and set(Z.tolist()) <= set(SPECIES)  # nothing unknown was evaluated
    assert np.isfinite(float(energy)) and forces.shape == (len(Z), 3) and np.isfinite(np.asarray(forces)).all()
    # translation invariance of a molecule: the forces sum to zero (float32 network)
    assert np.abs(np.asarray(forces, np.float64).sum(axis=0)).max() < 1e-3 * max(1.0, np.abs(forces).max())


# --- the QDI layer -------------------------------------------------------------------------------------------------
@st.composite
def qdi_cases(draw):
    """Valid hyperparameters (1-3 qubits, depth 1-2, every choice), or one of them out of range, of the wrong type
    or an unknown choice, or in_features not a multiple of n_qubits; finite input angles of any magnitude."""
    options = dict(n_qubits=draw(st.sampled_from([1, 2, 3])), depth=draw(st.sampled_from([1, 2])),
                   rotation=draw(st.sampled_from(["X", "y", "Z"])),
                   entangling=draw(st.sampled_from(["strong", "basic"])),
                   measure=draw(st.sampled_from(["X", "Y", "z"])),
                   measurement_mode=draw(st.sampled_from(["none", "even", "single"])))
    BAD = dict(n_qubits=[0, -1, 26, 2.0, True, "2"], depth=[0, 31, 1.5], rotation=["W", "", None],
               entangling=["full", 1], measure=["Q", "XY"], measurement_mode=["odd", "NONE "])
    bad = draw(st.sampled_from([None] * 6 + sorted(BAD)))
    if bad is not None:
        options[bad] = draw(st.sampled_from(BAD[bad]))
    chunks = draw(st.integers(1, 2))
    n = options["n_qubits"] if isinstance(options["n_qubits"], int) and options["n_qubits"] > 0 else 2
    in_features = n * chunks + draw(st.sampled_from([0] * 9 + [1]))
    rows = draw(st.integers(1, 3))
    angles = draw(st.lists(st.one_of(st.floats(-10, 10), st.floats(-1e30, 1e30, allow_nan=False,
                                                                   allow_infinity=False)),
                           min_size=rows * in_features, max_size=rows * in_features))
    return options, np.array(angles, dtype=np.float32).reshape(rows, in_features)


@settings(FUZZ, max_examples=25)
@given(qdi_cases())
def test_qdi_layer_gives_expectations_in_range_or_a_config_error(case):
    import jax

    from qallegro.quantum.layer import QDI

    options, inputs = case
    assume(np.isfinite(inputs).all())
    try:
        layer = QDI(**options)
        params = layer.init(jax.random.PRNGKey(0), inputs)
        out = np.asarray(layer.apply(params, inputs))
    except ConfigError as err:
        event("ConfigError")
        assert any(name in str(err) for name in list(options) + ["in_features"]), str(err)
        return
    event("evaluated")
    assert out.shape == (inputs.shape[0], layer.n_outputs)
    assert np.isfinite(out).all() and (np.abs(out) <= 1 + 1e-5).all()  # Pauli expectation values


# --- command-line arguments ----------------------------------------------------------------------------------------
class Reached(Exception):
    """Raised by the stand-in for the training loop: the command got through all of its checks."""


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    """A 6/3-frame slice of the embedded aspirin data, an empty extxyz file and a damaged npz."""
    d = tmp_path_factory.mktemp("cli")
    data = os.path.join(os.path.dirname(__file__), "..", "experiments", "data")
    for split, n in (("train", 6), ("test", 3)):
        f = np.load(os.path.join(data, f"rmd17_aspirin_{split}_01.npz"))
        np.savez(d / f"{split}.npz", **{k: f[k][:n] if k != "nuclear_charges" else f[k]
                                        for k in ("nuclear_charges", "coords", "energies", "forces")})
    (d / "empty.extxyz").write_text("")
    (d / "damaged.npz").write_bytes((d / "train.npz").read_bytes()[:500])
    return d


def run_train_command(monkeypatch, capsys, data_dir, options, config):
    """`train` in-process up to the model: building it is replaced by a stub, so the command stops once its
    arguments, config and data are checked (all checks come before the model is built and trained). Returns (exit
    status: 0 when the stub was reached, stderr, what the temporary folder holds besides the config file)."""
    import yaml

    import qallegro.train.run
    from experiments.run import main

    def prepare(*args, **kwargs):
        raise Reached()

    monkeypatch.setattr(qallegro.train.run, "prepare", prepare)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        try:
            status = main(["train", "--config", path, "--out", os.path.join(d, "run")] + options)
        except SystemExit as exit_:
            status = exit_.code
        except Reached:
            status = 0
        written = sorted(set(os.listdir(d)) - {"c.yaml"})
    return status, capsys.readouterr().err, written


def tiny_train_config(data_dir, train="train.npz", n_train=4, batch_size=2, learning_rate=2e-3):
    return {"dataset": {"train": str(data_dir / train), "test": str(data_dir / "test.npz"), "n_train": n_train,
                        "n_val": 2},
            "model": {"r_max": 4.0, "l_max": 1, "num_layers": 1, "num_tensor_features": 4,
                      "two_body_mlp": [8, 16], "latent_mlp": [16], "readout_mlp": [8]},
            "training": {"batch_size": batch_size, "eval_batch_size": 3, "learning_rate": learning_rate}}


@settings(FUZZ, max_examples=20)
@given(train=st.sampled_from(["train.npz"] * 3 + ["empty.extxyz", "damaged.npz", "missing.npz"]),
       n_train=st.sampled_from([4, 4, 1, 0, -1, 100]),
       max_epochs=st.sampled_from([None, 1, 3, "x", "1.5", ""]))
def test_train_arguments_pass_their_checks_or_are_refused_in_one_line(cli_data, monkeypatch, capsys, train,
                                                                      n_train, max_epochs):
    """Data files (empty, damaged, missing), split sizes and epoch counts: either the command gets through its
    checks or it stops with exit status 2 and one line (no traceback), before it writes anything."""
    from experiments.run import ERROR_STATUS

    options = [] if max_epochs is None else ["--max-epochs", str(max_epochs)]
    status, err, written = run_train_command(monkeypatch, capsys, cli_data, options,
                                             tiny_train_config(cli_data, train, n_train))
    if train == "train.npz" and 1 <= n_train <= 4 and max_epochs in (None, 1, 3):
        event("passed its checks")
        assert status == 0, err
        return
    assert status == ERROR_STATUS, (train, n_train, options, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(("error:", "python -m")), err
    assert written == [], written


@pytest.mark.parametrize("options, training", [(["--max-epochs", "-1"], {}), (["--max-epochs", "0"], {}),
                                               (["--max-minutes", "-5"], {}), ([], {"learning_rate": -1.0}),
                                               ([], {"batch_size": 0}), ([], {"batch_size": 2.5}),
                                               ([], {"batch_size": "x"}), ([], {"eval_batch_size": 0})])
def test_out_of_range_training_values_are_refused_before_the_model_is_built(cli_data, monkeypatch, capsys,
                                                                              options, training):
    from experiments.run import ERROR_STATUS

    config = tiny_train_config(cli_data)
    config["training"].update(training)
    status, err, written = run_train_command(monkeypatch, capsys, cli_data, options, config)
    assert status == ERROR_STATUS and "Traceback" not in err, err
