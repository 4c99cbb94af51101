"""The Cu–Li data set: `python -m experiments.culi {generate,validate-labeller} ...`.

    generate --n N --out FILE [--seed S] [--no-label]
        Structures from `qallegro.data.culi.generate_structures` (seeded; no torch needed) plus short Langevin MD
        snapshots at 300–1200 K, labelled with energy, forces and stress by SevenNet-0 (ASE calculator of the
        PyPI package `sevenn`, optional extra `culi`). Writes extxyz (gzip if FILE ends in .gz) whose frame
        headers carry the provenance (generator, seed, index, config_type, labeller and its version).
    validate-labeller --out DIR
        SevenNet-0 against the real VASP PBE frames in ../shared/data (mlearn Li/Cu test, Li training subset,
        Saidi Cu subset): energy per atom, forces and stress errors, written as DIR/culi_labeller_validation.md
        and .json.

The labeller is SevenNet-0 (11 July 2024 weights, trained on MPtrj PBE(+U); Cu and Li need no +U), so its
energies are on the Materials-Project-compatible VASP PBE scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from qallegro.train import evaluation

SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))

#: The real DFT frames used to validate the labeller: name -> (path relative to ../shared/data, frame stride,
#: (min, max) volume per atom in Å^3 or None). The Saidi Cu set mixes near-equilibrium AIMD cells with cells
#: compressed to 8.3–9 Å^3/atom (~140 GPa), far outside the generated set (>= ~10.5 Å^3/atom): reported apart.
DFT_SETS = {
    "mlearn_Li_test": ("mlearn_li_cu/mlearn_Li_test.extxyz", 1, None),
    "mlearn_Cu_test": ("mlearn_li_cu/mlearn_Cu_test.extxyz", 1, None),
    "mlearn_Li_train_subset": ("mlearn_li_cu/mlearn_Li_training.extxyz", 8, None),
    "saidi_Cu_near_equilibrium": ("cu_saidi23dnp/Cu_iter3_saidi.extxyz", 2, (10.0, None)),
    "saidi_Cu_compressed": ("cu_saidi23dnp/Cu_iter3_saidi.extxyz", 6, (None, 10.0)),
}


def volume_filter(frames, bounds):
    """Frames whose volume per atom (Å^3) lies in bounds = (min or None, max or None); all if bounds is None."""
    if not bounds:
        return list(frames)
    lo, hi = bounds
    return [a for a in frames if (lo is None or a.get_volume() / len(a) >= lo)
            and (hi is None or a.get_volume() / len(a) < hi)]


def make_labeller(threads: Optional[int] = None):
    """SevenNet-0 as an ASE calculator on the CPU.

    Raises:
        ImportError: with the install command when sevenn/torch are missing.
    """
    try:
        import torch
        from sevenn.calculator import SevenNetCalculator
    except ImportError as err:
        raise ImportError("labelling the Cu–Li set needs SevenNet-0: pip install torch==2.13.0 && "
                          "pip install -e '.[culi]'") from err
    import warnings

    if threads:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SevenNetCalculator("7net-0", device="cpu")


def labeller_version() -> str:
    import sevenn
    import torch

    return f"SevenNet-0 (7net-0, sevenn {sevenn.__version__}, torch {torch.__version__})"


def label(atoms, calc) -> Dict[str, np.ndarray]:
    """Energy (eV), forces (n, 3) eV/Å and stress (6,) Voigt eV/Å^3, ASE sign, of `atoms` with `calc`."""
    atoms = atoms.copy()
    atoms.calc = calc
    return {"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().copy(),
            "stress": atoms.get_stress(voigt=True).copy()}


def validate_labeller(out_dir: str, shared: str = SHARED, sets: Optional[Sequence[str]] = None,
                      threads: Optional[int] = None, log=print) -> Dict:
    """SevenNet-0 against the real VASP PBE frames (see DFT_SETS); writes the report beside the data.
    `sets` (names of DFT_SETS) recomputes only those and keeps the other entries of an existing report."""
    import ase.io

    chosen = {name: spec for name, spec in DFT_SETS.items() if not sets or name in sets}
    missing = sorted({os.path.join(shared, rel) for rel, _, _ in chosen.values()
                      if not os.path.exists(os.path.join(shared, rel))})
    if missing:  # before loading SevenNet: the frames are not in the repository
        raise FileNotFoundError(
            f"validate-labeller needs the real VASP frames, missing: {', '.join(missing)}. They are the shared data "
            f"folder's mlearn_li_cu/ and cu_saidi23dnp/ (default ../shared/data beside the repository); point "
            f"--shared at the folder that holds them")
    calc = make_labeller(threads)
    report = {"labeller": labeller_version(), "sets": {}, "machine": platform.platform()}
    json_path = os.path.join(out_dir, "culi_labeller_validation.json")
    if sets and os.path.exists(json_path):
        with open(json_path) as f:
            report["sets"] = {k: v for k, v in json.load(f)["sets"].items() if k in DFT_SETS}
    for name, (rel, stride, bounds) in chosen.items():
        path = os.path.join(shared, rel)
        frames = volume_filter(ase.io.read(path, index=f"::{stride}"), bounds)
        t0 = time.perf_counter()
        e_ref, e_pred, n_atoms, counts, df, ds = [], [], [], [], [], []
        elements = sorted({int(z) for a in frames for z in a.numbers})
        for a in frames:
            ref = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": a.get_stress()}
            got = label(a, calc)
            e_ref.append(ref["energy"])
            e_pred.append(got["energy"])
            n_atoms.append(len(a))
            counts.append([int(np.sum(a.numbers == z)) for z in elements])
            df.append(np.abs(got["forces"] - ref["forces"]).ravel())
            ds.append(np.abs(got["stress"] - ref["stress"]))
        n_atoms, counts = np.array(n_atoms), np.array(counts, dtype=float)
        volumes = [a.get_volume() / len(a) for a in frames]
        entry = {"file": rel, "stride": stride, "frames": len(frames), "atoms": int(n_atoms.sum()),
                 "volume_per_atom_range": [round(min(volumes), 2), round(max(volumes), 2)],
                 "elements": elements, "seconds": round(time.perf_counter() - t0, 1),
                 **evaluation.energy_errors(n_atoms, counts, np.array(e_ref), np.array(e_pred)),
                 "forces_mae": 1000 * float(np.mean(np.concatenate(df))),
                 "forces_rms_reference": 1000 * float(np.sqrt(np.mean(np.concatenate(
                     [a.get_forces().ravel() for a in frames]) ** 2))),
                 "stress_mae": 1000 * float(np.mean(np.concatenate(ds)))}
        report["sets"][name] = entry
        log(f"{name}: {entry['frames']} frames, E/atom MAE {entry['energy_per_atom_mae']:.1f} meV "
            f"(refit {entry['energy_per_atom_mae_refit']:.1f}), F MAE {entry['forces_mae']:.1f} meV/Å, "
            f"S MAE {entry['stress_mae']:.2f} meV/Å^3 ({entry['seconds']} s)")
    os.makedirs(out_dir, exist_ok=True)
    report["sets"] = {k: report["sets"][k] for k in DFT_SETS if k in report["sets"]}
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out_dir, "culi_labeller_validation.md"), "w") as f:
        f.write(validation_markdown(report))
    return report


def validation_markdown(report: Dict) -> str:
    lines = [
        "# Labeller validation: SevenNet-0 vs real VASP PBE frames",
        "",
        f"Labeller: {report['labeller']}, CPU. Reference: the VASP PBE frames in `../shared/data` (see their "
        "SOURCE.md); `stride` k means every k-th frame. Produced by `python -m experiments.culi validate-labeller`.",
        "",
        "| set | frames (stride) | atoms | V/atom (Å^3) | E/atom MAE (meV) | mean E/atom error (meV) "
        "| E/atom MAE, refit (meV) | forces MAE (meV/Å) | RMS of DFT forces (meV/Å) | stress MAE (meV/Å^3) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["sets"].items():
        v = e.get("volume_per_atom_range", ["?", "?"])
        lines.append(f"| {name} | {e['frames']} ({e['stride']}) | {e['atoms']} | {v[0]}–{v[1]} | "
                     f"{e['energy_per_atom_mae']:.1f} | "
                     f"{e['energy_per_atom_mean_error']:+.1f} | {e['energy_per_atom_mae_refit']:.1f} | "
                     f"{e['forces_mae']:.1f} | {e['forces_rms_reference']:.0f} | {e['stress_mae']:.2f} |")
    lines += [
        "",
        "\"refit\": after one energy reference per element is refitted by least squares on the set itself "
        "(for a one-element set: the mean per-atom offset is removed), i.e. the error left once the zero of "
        "energy of the DFT set and of the labeller agree. 1 meV/Å^3 = 0.160 GPa.",
        "",
        "What these numbers mean for the generated set: `culi.SOURCE.md`, section \"The labeller's error\".",
        "",
    ]
    return "\n".join(lines)


def _single_point(atoms, labels: Dict[str, np.ndarray], info: Dict):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.info = {k: v for k, v in {**atoms.info, **info}.items() if isinstance(v, (str, int, float, np.integer,
                                                                                np.floating))}
    out.calc = SinglePointCalculator(out, energy=labels["energy"], forces=labels["forces"], stress=labels["stress"])
    return out


def md_snapshots(calc, seed: int, trajectory: int, n_snapshots: int, temperature_K: float, every: int = 4,
                 warmup: int = 16, max_atoms: int = 24, timestep_fs: float = 2.0) -> List:
    """Langevin NVT snapshots (ASE, friction 0.01/fs, labelled on the way by `calc`) from a seeded start.

    The start is `generate_structure(seed, 100000 + trajectory)` restricted to bulk kinds and `max_atoms`;
    snapshots closer than MIN_DISTANCE are dropped. Returns labelled ase.Atoms (SinglePointCalculator).
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from qallegro.data.culi import MIN_DISTANCE, generate_structure, min_distance

    kinds = ("solid_solution", "intermetallic", "vacancy", "interface")
    atoms = generate_structure(seed, 100000 + trajectory, kind=kinds[trajectory % len(kinds)], max_atoms=max_atoms)
    start_kind = atoms.info["config_type"]
    atoms.calc = calc
    rng = np.random.default_rng([seed, 200000 + trajectory])
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K, friction=0.01 / units.fs, rng=rng)
    dyn.run(warmup)
    out = []
    for k in range(n_snapshots):
        dyn.run(every)
        if min_distance(atoms) < MIN_DISTANCE:
            continue
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().copy(),
                  "stress": atoms.get_stress(voigt=True).copy()}
        out.append(_single_point(atoms, labels, {
            "config_type": "md", "md_start": start_kind, "trajectory": int(trajectory),
            "temperature_K": float(temperature_K), "md_step": int(warmup + (k + 1) * every),
            "timestep_fs": float(timestep_fs)}))
    return out


def generate(n: int, out: str, seed: int = 0, md_fraction: float = 0.1, snapshots_per_trajectory: int = 25,
             no_label: bool = False, threads: Optional[int] = None, log=print) -> Dict:
    """Write `n` Cu–Li structures to `out` (extxyz; gzip if it ends in .gz): (1 - md_fraction)·n static
    structures from `qallegro.data.culi` and md_fraction·n Langevin MD snapshots (300, 600, 900, 1200 K in
    turn), all labelled by SevenNet-0 unless `no_label` (then MD is skipped and only static structures are
    written). Returns a summary dict (counts, seconds, labeller)."""
    import gzip
    import shutil

    import ase.io

    from qallegro.data.culi import GENERATOR, composition_summary, generate_structures

    t0 = time.perf_counter()
    n_md = 0 if no_label else int(round(md_fraction * n))
    structures = generate_structures(n - n_md, seed)
    log(f"{len(structures)} static structures generated in {time.perf_counter() - t0:.1f} s: "
        f"{composition_summary(structures)}")
    plain = out[:-3] if out.endswith(".gz") else out
    os.makedirs(os.path.dirname(os.path.abspath(plain)), exist_ok=True)
    if os.path.exists(plain):
        os.remove(plain)
    labeller = "none" if no_label else labeller_version()
    calc = None if no_label else make_labeller(threads)
    frames = 0

    def write(atoms):
        nonlocal frames
        ase.io.write(plain, atoms, format="extxyz", append=True)
        frames += 1

    for k, atoms in enumerate(structures):
        info = {"labeller": labeller}
        if no_label:
            atoms = atoms.copy()
            atoms.info = {key: v for key, v in {**atoms.info, **info}.items() if not isinstance(v, dict)}
            write(atoms)
        else:
            write(_single_point(atoms, label(atoms, calc), info))
        if (k + 1) % 100 == 0:
            log(f"  {k + 1}/{len(structures)} static structures labelled ({time.perf_counter() - t0:.0f} s)")
    temperatures = (300.0, 600.0, 900.0, 1200.0)
    trajectory = 0
    while frames < n and not no_label:
        want = min(snapshots_per_trajectory, n - frames)
        for atoms in md_snapshots(calc, seed, trajectory, want, temperatures[trajectory % 4]):
            atoms.info.update({"generator": GENERATOR, "seed": int(seed), "labeller": labeller})
            write(atoms)
        log(f"  MD trajectory {trajectory} at {temperatures[trajectory % 4]:.0f} K: {frames}/{n} frames "
            f"({time.perf_counter() - t0:.0f} s)")
        trajectory += 1
    if out.endswith(".gz"):
        with open(plain, "rb") as src, gzip.GzipFile(out, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        os.remove(plain)
    summary = {"n": frames, "seed": seed, "static": len(structures), "md_trajectories": trajectory,
               "kinds": composition_summary(structures), "labeller": labeller, "generator": GENERATOR,
               "seconds": round(time.perf_counter() - t0, 1)}
    log(f"wrote {frames} frames to {out} in {summary['seconds']} s")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.culi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate-labeller", help="SevenNet-0 against the real VASP PBE frames")
    v.add_argument("--out", default=os.path.join("experiments", "data"), help="directory of the report")
    v.add_argument("--shared", default=SHARED, help="the shared data folder (default: ../shared/data)")
    v.add_argument("--sets", nargs="*", default=None, choices=list(DFT_SETS),
                   help="recompute only these sets, keeping the others of an existing report")
    v.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    g = sub.add_parser("generate", help="generate and label the Cu–Li set")
    g.add_argument("--n", type=int, required=True, help="number of frames")
    g.add_argument("--out", required=True, help="output extxyz (.gz: gzip-compressed)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--md-fraction", type=float, default=0.1, help="share of MD snapshots (default 0.1)")
    g.add_argument("--no-label", action="store_true", help="structures only, no SevenNet (no torch needed)")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.command == "validate-labeller":
        try:
            validate_labeller(args.out, args.shared, args.sets, args.threads)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif args.command == "generate":
        summary = generate(args.n, args.out, args.seed, args.md_fraction, no_label=args.no_label,
                           threads=args.threads)
        with open(os.path.splitext(args.out[:-3] if args.out.endswith(".gz") else args.out)[0] + ".summary.json",
                  "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
