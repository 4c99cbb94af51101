"""The SAMO-COBRA benchmark script end to end on a tiny budget: report files, the cheap-f1 variant, --resume."""

import json
import os

from experiments.benchmarks import samo_cobra as bench


def test_benchmark_writes_report_and_resumes(tmp_path):
    out = str(tmp_path)
    samplers = "samo-cobra (cheap f1),random"
    args = ["--budget", "7", "--zdt-dim", "3", "--problems", "ZDT1", "--samplers", samplers, "--out", out]
    assert bench.main(args + ["--seeds", "1"]) == 0
    for ext in ("md", "json", "png"):
        assert os.path.getsize(os.path.join(out, f"samo_cobra_benchmark.{ext}")) > 0
    first = json.load(open(os.path.join(out, "samo_cobra_benchmark.json")))
    assert set(first["results"]["ZDT1"]) == {bench.CHEAP, "random"}
    assert len(first["results"]["ZDT1"][bench.CHEAP]["history"][0]) == 7

    # Resuming with one more seed runs only seed 1 and keeps seed 0 as it was.
    resumed = args + ["--seeds", "2", "--resume", os.path.join(out, "samo_cobra_benchmark.json")]
    assert bench.main(resumed) == 0
    second = json.load(open(os.path.join(out, "samo_cobra_benchmark.json")))
    for name, entry in second["results"]["ZDT1"].items():
        assert len(entry["hypervolume"]) == 2
        assert entry["hypervolume"][0] == first["results"]["ZDT1"][name]["hypervolume"][0]
    assert len(second["runs"]) == 2
    text = open(os.path.join(out, "samo_cobra_benchmark.md")).read()
    assert "| ZDT1 | 2 |" in text and "Run 2 (resuming the runs before)" in text and "cheap f1" in text
