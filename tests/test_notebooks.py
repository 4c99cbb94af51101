"""The notebooks in notebooks/ run top to bottom with their small settings (QALLEGRO_NOTEBOOK_SMALL=1), write the
figures they promise (into QALLEGRO_NOTEBOOK_OUT) and pass their own assertions (simulator equals PennyLane,
NVE conserves energy, ...); the committed notebooks carry no outputs.

One test per notebook, so pytest-xdist spreads them over workers. Each runs in a fresh kernel of this
interpreter: a kernel spec written into a temporary JUPYTER_PATH points at sys.executable, so neither a
registered `python3` kernel nor the user's Jupyter set-up is needed, only ipykernel (the dev extra).
"""

import json
import math
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"

#: notebook -> figures (relative to QALLEGRO_NOTEBOOK_OUT) it must write
FIGURES = {
    "01_train_allegro_aspirin": ["learning_curve.png", "learning_curve_ema.png", "parity.png",
                                 "force_errors_per_element.png"],
    "02_qdi_layer": ["circuit.png", "fourier_power_8_inputs.png", "fourier.png", "fisher.png", "zx.png",
                     "shot_noise.png"],
    "03_model_families_and_pareto": ["families.png", "hpo/pareto.png", "hpo/hypervolume.png"],
    "04_md": ["nve_energy.png", "distance_distribution.png"],
}


def check_01(s):
    assert s["results"]["epochs"] == 3 and s["results"]["n_test"] == 50
    assert math.isfinite(s["test"]["forces_mae"]) and math.isfinite(s["test"]["energy_mae"])
    assert set(s["per_element"]) == {"H", "C", "O"}


def check_02(s):
    assert s["simulator_vs_pennylane_max_abs_diff"] < 1e-6
    assert s["fourier_vs_qml_fourier"] < 1e-8
    assert abs(s["shot_noise"]["slope"] + 0.5) < 0.05
    assert max(s["fisher"]["ranks"]) == 12  # 2 qubits: 4^2 - 2^2
    assert s["zx"]["after"]["spiders"] < s["zx"]["before"]["spiders"]


def check_03(s):
    params = {f: s["families"][f]["n_parameters"] for f in ("allegro", "allegro-mlp", "allegro-qdi")}
    assert params["allegro"] < params["allegro-qdi"] < params["allegro-mlp"]
    assert s["study"]["trials"] == 3 and s["study"]["pareto"] >= 1


def check_04(s):
    assert abs(s["nve"]["drift_meV_per_atom_per_ps"]) < 1.0
    assert s["nve"]["max_deviation_meV_per_atom"] < 1.0
    assert s["distances"]["overlap"] > 0.8


CHECKS = {"01_train_allegro_aspirin": check_01, "02_qdi_layer": check_02, "03_model_families_and_pareto": check_03,
          "04_md": check_04}


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FIGURES)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: clear the outputs before committing (cell {cell.get('id')})"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernel spec for this interpreter, first on JUPYTER_PATH; returns its name."""
    name = "qallegro-notebook-test"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "qallegro tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("QALLEGRO_NOTEBOOK_SMALL", "1")
    monkeypatch.delenv("QALLEGRO_NOTEBOOK_POTENTIAL", raising=False)
    return name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs(name, kernel_env, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("QALLEGRO_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # A failing cell (an error or a failed assertion inside the notebook) raises CellExecutionError here.
    NotebookClient(nb, kernel_name=kernel_env, timeout=900,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for figure in FIGURES[name]:
        path = out / figure
        assert path.is_file() and path.stat().st_size > 1000, f"{name} did not write {figure}"
    shown = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert shown >= len(FIGURES[name]), f"{name} displayed {shown} figures"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["small"] is True
    CHECKS[name](summary)
