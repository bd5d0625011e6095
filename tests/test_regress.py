"""The kernel-speed regression gate (bench/regress.py): its messages, an injected 2x slowdown
caught end to end, and the committed GPU records still meeting the kernel bars."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import regress
from bench.results import read_records

ROOT = Path(__file__).resolve().parent.parent


def test_medians_are_per_call():
    doc = {"benchmarks": [
        {"name": "a", "extra_info": {"case": "scan-fwd-ours-triton", "calls_per_round": 10},
         "stats": {"median": 1.0e-3}},
        {"name": "test_speed[x]", "extra_info": {}, "stats": {"median": 2.0}},
    ]}  # fmt: skip
    assert regress.medians(doc) == {"scan-fwd-ours-triton": 1.0e-4, "test_speed[x]": 2.0}


def test_check_names_case_baseline_median_and_ratio():
    run = {"scan-fwd-ours-triton": 2.0e-3, "scan-fwd-ours-torch-loop": 1.0}
    base = {"scan-fwd-ours-triton": 1.0e-3, "scan-fwd-ours-torch-loop": 1.02}
    failures, notes = regress.check(run, base, "cuda", 0.10, key="H100-x")
    assert failures == [
        "scan-fwd-ours-triton: median 2.0000 ms vs baseline 1.0000 ms on H100-x: 2.00x, "
        "slower by more than the 10% threshold"
    ]
    # a host-bound case (a _ref loop) is a ratio's denominator on a GPU, never held to a baseline
    assert any(n.startswith("scan-fwd-ours-torch-loop: host-bound") for n in notes)
    failures, notes = regress.check(run, {**base, "scan-fwd-ours-torch-loop": 0.5}, "cuda", key="x")
    assert len(failures) == 1 and "ours-torch-loop" not in failures[0]
    # on the CPU every case is compared (there the loops are the native, steady side)
    failures, _ = regress.check(run, {**base, "scan-fwd-ours-torch-loop": 0.5}, "cpu", key="x")
    assert any(f.startswith("scan-fwd-ours-torch-loop: median 1000.0000 ms") for f in failures)
    # a same-run ratio over its limit fails on its own, with or without a baseline
    failures, _ = regress.check({**run, "scan-fwd-ours-triton": 0.2}, None, "cuda")
    assert failures == ["scan-fwd-ours-triton / scan-fwd-ours-torch-loop = 0.200 (allowed <= 0.05)"]


def _bench(tmp_path, case, out, env_extra=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--regress",
           f"{ROOT / 'tests' / 'regress' / 'test_speed.py'}::test_speed[{case}]",
           f"--benchmark-json={out}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_an_injected_2x_slowdown_fails_the_gate(tmp_path):
    case = "scan-fwd-ours-torch-loop"  # native CPU code: steady enough to see 2x at once
    baselines = tmp_path / "baselines"
    # the baseline: the faster of two runs, so that one run slowed by the machine (CI shares its
    # cores) cannot hide the injected slowdown
    runs = [tmp_path / "first.json", tmp_path / "second.json"]
    for run in runs:
        _bench(tmp_path, case, run)
    best = min(runs, key=lambda r: regress.medians(json.loads(r.read_text()))[case])
    save = [sys.executable, "-m", "bench.regress", "check", str(best),
            "--save-baseline", "--baselines", str(baselines)]  # fmt: skip
    assert subprocess.run(save, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    slow = [tmp_path / "slow1.json", tmp_path / "slow2.json"]  # the faster of two, likewise
    for run in slow:
        _bench(tmp_path, case, run, {"GRIFFIN_BENCH_INJECT_SLOWDOWN": case})
    slowest_best = min(slow, key=lambda r: regress.medians(json.loads(r.read_text()))[case])
    check = [sys.executable, "-m", "bench.regress", "check", str(slowest_best),
             "--baselines", str(baselines)]  # fmt: skip
    done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("  FAIL")]
    assert f"FAIL {case}: median" in line and "vs baseline" in line and "threshold" in line
    ratio = float(line.split(": ")[-1].split("x,")[0])
    assert 1.5 < ratio < 3.0, line


@pytest.mark.parametrize(
    "path", sorted((ROOT / "results").glob("*/kernels.jsonl")), ids=lambda p: p.parent.name
)
def test_committed_kernel_records_meet_their_bars(path):
    records, problems = read_records(path)
    assert not problems
    values = regress.kernel_bar_values(records)
    assert set(values) == set(regress.KERNEL_BARS), "a bar has no record to check it"
    for name, value in values.items():
        bar, floor = regress.KERNEL_BARS[name]
        assert value >= min(bar, floor), f"{path}: {name} = {value:.3f}, below {min(bar, floor)}"


def test_baselines_are_valid_json_keyed_by_their_file_name():
    for path in sorted((ROOT / "results" / "baselines").glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc["device_key"] == path.stem and doc["medians_s"], path
