"""The kernel-speed regression gate (bench/regress.py): its messages, the statistics rule on a
baseline's samples (a planted 10% slowdown fails, reruns do not), the one CPU limit failing under
a planted slowdown measured end to end, and the committed GPU records still meeting the kernel
bars."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_a_case_timed_otherwise_than_its_baseline_is_not_compared():
    run = {"scan-fwd-ours-triton": 2.0e-3}
    base = {"scan-fwd-ours-triton": 1.0e-3}
    graph = {"scan-fwd-ours-triton": "cuda-graph"}
    # a baseline saved before timers were recorded was timed eagerly: a graph run skips the case
    failures, notes = regress.check(run, base, "cuda", key="k", timers=graph)
    assert failures == [] and any("not compared (re-save the baseline" in n for n in notes)
    # same timer on both sides: compared (and here 2x slower)
    failures, _ = regress.check(run, base, "cuda", key="k", timers=graph, baseline_timers=graph)
    assert len(failures) == 1 and "2.00x" in failures[0]


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


def test_timer_per_case():
    # on a GPU: a CUDA graph for the torch kernels and torch peers, eager for the _ref loops
    # (host-bound by design) and the JAX cases (one XLA executable per call)
    assert regress.timer_for("scan-fwdbwd-ours-triton", "cuda") == "cuda-graph"
    assert regress.timer_for("conv1d-fwd-ours-triton", "cuda:0") == "cuda-graph"
    assert regress.timer_for("scan-fwdbwd-fla-chunk", "cuda") == "cuda-graph"
    assert regress.timer_for("rglru-fwdbwd-torch-unfused-rglru", "cuda") == "cuda-graph"
    assert regress.timer_for("scan-fwdbwd-ours-torch-loop", "cuda") == "eager"
    assert regress.timer_for("scan-fwd-recurrentgemma-jax-associative", "cuda") == "eager"
    assert regress.timer_for("decode-fwd-ours-torch-optimized", "cuda") is None  # not a kernel case
    # on the CPU everything is eager
    assert {regress.timer_for(c.id, "cpu") for c in regress.CASES} == {"eager"}


def test_round_target_replays_a_capture_or_falls_back_to_eager():
    calls, synced = [], []

    def fn(*args):
        calls.append(args)
        return "out"

    # eager: the calls queued one by one, one sync after the last, setup's args passed on
    target, timer, error = regress.round_target(fn, 3, synced.append, "eager")
    target(1)
    assert (timer, error, calls, synced) == ("eager", None, [(1,)] * 3, ["out"])

    def capture(f, n):
        for _ in range(n):  # a capture runs the calls once (recording them)
            f()
        return lambda: synced.append("replay")

    calls.clear(), synced.clear()
    target, timer, error = regress.round_target(fn, 3, synced.append, "cuda-graph", capture)
    target()
    assert (timer, error, len(calls), synced) == ("cuda-graph", None, 3, ["replay"])

    def failing(f, n):
        raise RuntimeError("operation not permitted when stream is capturing")

    calls.clear(), synced.clear()
    target, timer, error = regress.round_target(fn, 3, synced.append, "cuda-graph", failing)
    target()
    assert (timer, len(calls), synced) == ("eager", 3, ["out"])
    assert error == "RuntimeError: operation not permitted when stream is capturing"


def test_check_shows_a_timer_other_than_planned():
    run = {"scan-fwdbwd-ours-triton": 2.0e-3, "scan-fwd-ours-triton": 1.0e-3}
    base = {"scan-fwdbwd-ours-triton": 1.0e-3, "scan-fwd-ours-triton": 1.0e-3}
    doc = {"benchmarks": [
        {"name": "a", "extra_info": {"case": "scan-fwdbwd-ours-triton", "timer": "eager"},
         "stats": {"median": 2.0e-3}},
        {"name": "b", "extra_info": {"case": "scan-fwd-ours-triton", "timer": "cuda-graph"},
         "stats": {"median": 1.0e-3}},
    ]}  # fmt: skip
    timers = regress.timers(doc)
    assert timers == {"scan-fwdbwd-ours-triton": "eager", "scan-fwd-ours-triton": "cuda-graph"}
    failures, notes = regress.check(
        run, base, "cuda", key="k", timers=timers, baseline_timers=timers
    )
    assert failures == [
        "scan-fwdbwd-ours-triton: median 2.0000 ms vs baseline 1.0000 ms on k: 2.00x, "
        "slower by more than the 10% threshold [eager timer, not cuda-graph]"
    ]
    assert "scan-fwd-ours-triton: median 1.0000 ms vs baseline 1.0000 ms on k: 1.00x" in notes
    _, notes = regress.check(run, None, "cuda", key="k", timers=timers)
    assert "scan-fwdbwd-ours-triton: median 2.0000 ms [eager timer, not cuda-graph]" in notes
    # on the CPU eager is the plan: no mark
    failures, notes = regress.check(run, base, "cpu", key="k", timers=dict.fromkeys(run, "eager"))
    assert not any("timer" in line for line in failures + notes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_capture_round_on_a_gpu():
    """Our Triton fwd+bwd captured and replayed gives the eager call's gradients."""
    from bench import catalog
    from bench.backends import backend_for
    from bench.kernel_workloads import make_inputs

    def captured_grads(op):
        handle = catalog.adapter(catalog.implementation("ours-triton")).build(
            op, "float32", backend_for("torch", "cuda")
        )
        params = {"batch": 2, "seq_len": 256, "width": 128}
        fn = handle.prepare(make_inputs(op, params, 0, "cuda", "float32"), True)
        expected = [g.clone() for g in fn()]
        grads = []  # the last call's gradients: captured outputs, written by every replay
        regress.capture_round(lambda: grads.append(fn()), 2)()
        return grads[-1], expected

    for op in ("scan", "rglru", "conv1d"):
        got, expected = captured_grads(op)
        for g, want in zip(got, expected, strict=True):
            torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_failed_capture_falls_back_to_eager_on_a_gpu():
    x = torch.ones(4, device="cuda")
    target, timer, error = regress.round_target(
        lambda: x.sum().item(), 2, lambda _: torch.cuda.synchronize(), "cuda-graph"
    )
    assert timer == "eager" and error  # .item() syncs with the host: not capturable
    target()  # the eager round runs, and the device is usable afterwards
    assert torch.ones(3, device="cuda").sum().item() == 3.0


def _run_json(case_samples: dict[str, list[float]], device="cuda", key="H200-test") -> dict:
    """A pytest-benchmark JSON file's content, as `nox -s regress` writes it (with its data)."""
    import statistics

    return {
        "machine_info": {"griffin_device": device, "griffin_device_key": key},
        "benchmarks": [
            {"name": c, "extra_info": {"case": c, "calls_per_round": 10, "timer": "cuda-graph"},
             "stats": {"median": statistics.median(d), "data": d}}
            for c, d in case_samples.items()
        ],
    }  # fmt: skip


def test_a_planted_10_percent_slowdown_fails_and_reruns_of_one_commit_do_not(tmp_path):
    """The statistics rule on samples (as on the H200): the baseline keeps every round; a run
    10% slower fails with its interval and p, reruns drifting by 3% and noise of 5% do not."""
    rng = np.random.default_rng(7)
    case = "scan-fwd-ours-triton"

    def rounds(scale, n=30, noise=0.05):  # per-round seconds of 10 calls
        return list(1.5e-3 * scale * (1 + noise * rng.standard_normal(n)))

    baselines = tmp_path / "baselines"
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_run_json({case: rounds(1.0)})))
    assert regress.main(["check", str(base), "--save-baseline", "--baselines", str(baselines)]) == 0
    saved = json.loads((baselines / "H200-test.json").read_text())
    assert len(saved["samples_s"][case]) == 30 and saved["samples_s"][case][0] < 2e-4  # per call
    for i, scale in enumerate((1.0, 0.98, 1.03, 1.0)):  # reruns: no false alarm
        rerun = tmp_path / f"rerun{i}.json"
        rerun.write_text(json.dumps(_run_json({case: rounds(scale)})))
        assert regress.main(["check", str(rerun), "--baselines", str(baselines)]) == 0, scale
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(_run_json({case: rounds(1.10)})))
    run = json.loads(slow.read_text())
    failures, _ = regress.check(
        regress.medians(run), regress.load_baseline("H200-test", baselines), "cuda",
        key="H200-test", timers=regress.timers(run),
        baseline_timers=regress.load_baseline_timers("H200-test", baselines),
        run_samples=regress.samples(run),
        baseline_samples=regress.load_baseline_samples("H200-test", baselines),
    )  # fmt: skip
    (line,) = failures
    assert line.startswith(f"{case}: median") and "95% interval 1.0" in line and "p " in line
    assert "slower beyond its noise and by more than 5%" in line
    assert regress.main(["check", str(slow), "--baselines", str(baselines)]) == 1
    # fewer than 5 samples a side: the median and the threshold decide, as for an old baseline
    few = regress.check({case: 1.2e-4}, {case: 1.5e-4 / 1.5}, "cuda", key="k",
                        run_samples={case: [1.2e-4] * 3}, baseline_samples={case: [1e-4] * 3})  # fmt: skip
    assert len(few[0]) == 1 and "threshold" in few[0][0]


def test_the_planted_slowdown_switch():
    assert regress.planted_calls("a", 10, "a:1.1") == 11  # one call more in a round of ten
    assert regress.planted_calls("a", 1, "a") == 2  # the default factor: 2
    assert regress.planted_calls("b", 10, "a:1.1") == regress.planted_calls("a", 10, None) == 10
    for bad in ("a:1.01", "a:fast", "a:0.5"):
        with pytest.raises(ValueError, match="FACTOR must be a number > 1"):
            regress.planted_calls("a", 10, bad)


def test_the_cpu_gate_has_only_limits_a_regression_crosses(tmp_path):
    """On the CPU the interpreted-vs-native ratios are printed, not gated (none could fail);
    the one CPU limit, fused vs unfused RG-LRU fwd+bwd, fails under a planted 2x slowdown of
    the fused kernel, measured as `nox -s regress` measures it."""
    gated = [r for r in regress.RATIOS if r[3] is not None]
    assert [r[0] for r in gated] == ["rglru-fwdbwd-ours-triton"]
    cases = ["rglru-fwdbwd-ours-triton", "rglru-fwdbwd-torch-unfused-rglru"]
    out = tmp_path / "planted.json"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "GRIFFIN_BENCH_INJECT_SLOWDOWN": "rglru-fwdbwd-ours-triton",
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--regress",
           *(f"{ROOT / 'tests' / 'regress' / 'test_speed.py'}::test_speed[{c}]" for c in cases),
           f"--benchmark-json={out}", "--benchmark-save-data"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check = [sys.executable, "-m", "bench.regress", "check", str(out),
             "--baselines", str(tmp_path / "none")]  # fmt: skip
    done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("  FAIL")]
    assert "rglru-fwdbwd-ours-triton / rglru-fwdbwd-torch-unfused-rglru" in line
    assert "(allowed <= 1)" in line and float(line.split("= ")[1].split()[0]) > 1.0


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


def _repo(tmp_path):
    """A git repository with kernels/{_triton,scan,conv1d}.py; returns (root, commit)."""
    root = tmp_path / "repo"
    (root / "kernels").mkdir(parents=True)
    (root / "kernels" / "_triton.py").write_text("X = 1\n")
    (root / "kernels" / "scan.py").write_text("from kernels._triton import X\n")
    (root / "kernels" / "conv1d.py").write_text("from kernels.scan import X\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)

    def commit(msg):
        subprocess.run([*git, "add", "-A"], cwd=root, check=True)
        subprocess.run([*git, "commit", "-qm", msg], cwd=root, check=True)
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    return root, commit


def _kernel_records(root, device, rows):
    path = root / "results" / device / "kernels.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "schema": 1,
            "run_id": run,
            "key": f"{op}|{i}",
            "workload": f"kernel_{op}",
            "model": "-",
            "impl": "ours-triton",
            "status": "ok",
            "env": {"git_sha": sha} if sha else None,
        }
        for i, (op, sha, run) in enumerate(rows)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_kernel_sources_follow_the_imports_inside_kernels(tmp_path):
    root, _ = _repo(tmp_path)
    assert regress.kernel_sources("conv1d", root) == [
        "kernels/_triton.py", "kernels/conv1d.py", "kernels/scan.py",
    ]  # fmt: skip
    assert "kernels/_triton.py" in regress.kernel_sources("scan")  # the real tree


def test_a_kernel_change_without_fresh_records_fails_naming_them(tmp_path):
    root, commit = _repo(tmp_path)
    first = commit("kernels")
    _kernel_records(root, "h200", [("scan", first, "r1"), ("conv1d", first, "r1")])
    commit("records")
    failures, notes = regress.fresh_kernel_records(root, "h200")
    assert not failures and len(notes) == 2
    # a change to the conv1d kernel alone: its records are stale, the scan's are not
    (root / "kernels" / "conv1d.py").write_text("from kernels.scan import X\nY = 2\n")
    changed = commit("conv1d faster")
    failures, notes = regress.fresh_kernel_records(root, "h200")
    assert len(failures) == 1 and len(notes) == 1
    assert "results/h200/kernels.jsonl: 1 conv1d record(s)" in failures[0]
    assert f"predate {changed[:12]}" in failures[0] and "kernels/conv1d.py" in failures[0]
    # a change to a file both import (kernels/_triton.py) makes both stale
    (root / "kernels" / "_triton.py").write_text("X = 3\n")
    commit("triton helper")
    failures, _ = regress.fresh_kernel_records(root, "h200")
    assert len(failures) == 2
    # measured again: fresh; a crashed point's record takes its run's commit
    again = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    _kernel_records(root, "h200", [("scan", again, "r2"), ("conv1d", None, "r2")])
    failures, notes = regress.fresh_kernel_records(root, "h200")
    assert not failures and len(notes) == 2


def test_records_that_cannot_vouch_for_a_commit_fail(tmp_path):
    root, commit = _repo(tmp_path)
    head = commit("kernels")
    _kernel_records(
        root, "h200",
        [("scan", head + "-dirty", "a"), ("rglru", "0" * 40, "b"), ("conv1d", None, "c")],
    )  # fmt: skip
    failures, _ = regress.fresh_kernel_records(root, "h200")
    assert len(failures) == 3
    assert any("not in this history" in f for f in failures)
    assert sum("not measured at a commit" in f for f in failures) == 2


def test_no_records_of_the_gated_device_is_said_not_failed(tmp_path):
    root, commit = _repo(tmp_path)
    commit("kernels")
    failures, notes = regress.fresh_kernel_records(root, "h200")
    assert not failures and "no h200 kernel records" in notes[0]
