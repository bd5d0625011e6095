"""The harness: every catalog implementation runs, the correctness gate, isolation of failures,
resumable sweeps, records, suite validation and the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_impls import spec

from bench import catalog, results, runner, suite
from bench.__main__ import main as cli
from bench.results import SCHEMA_VERSION, RecordWriter, load, read_records, recorded_keys

TINY_TIMING = "[timing]\nwarmup = 1\nmin_reps = 2\nmax_reps = 3\nbudget_s = 0.01\n"
ROOT = Path(__file__).resolve().parent.parent


def write_suite(tmp_path: Path, body: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text('dtype = "float32"\n' + TINY_TIMING + body)
    return path


def run_suite(path: Path, out: Path, isolate: bool = False, **kw) -> list[dict]:
    s = suite.load(str(path), "cpu", **kw)
    runner.run(s, out, "cpu", isolate=isolate, progress=False)
    records, problems = read_records(out)
    assert not problems
    return [r for r in records if r["workload"] != "ceiling"]


def model_for(impl) -> str:
    """A tiny model each implementation supports (checked through the adapter itself)."""
    module = catalog.adapter(impl)
    for name in ("griffin-tiny", "gemma-tiny"):
        from models.config import preset

        if module.supports(preset(name)) is None:
            return name
    raise AssertionError(f"{impl.name} supports no tiny model")


@pytest.mark.parametrize("impl", catalog.model_implementations(), ids=lambda i: i.name)
def test_every_available_implementation_runs_every_workload(impl, tmp_path):
    if catalog.missing_requirements(impl):
        pytest.skip(catalog.missing_requirements(impl))
    model = model_for(impl)
    body = f"""
[[case]]
workload = "prefill"
models = ["{model}"]
impls = ["{impl.name}"]
batch = 2
prompt = 12
[[case]]
workload = "decode"
models = ["{model}"]
impls = ["{impl.name}"]
batch = 2
prompt = 10
steps = 4
[[case]]
workload = "train_step"
models = ["{model}"]
impls = ["{impl.name}"]
tokens_per_batch = 32
seq_len = 16
[[case]]
workload = "throughput"
models = ["{model}"]
impls = ["{impl.name}"]
gen_len = 4
max_batch = 4
"""
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert [r["status"] for r in records] == ["ok"] * 4, [r.get("error") for r in records]
    for r in records:
        assert r["correctness"]["passed"] and r["correctness"]["rel_err"] <= r["correctness"]["tol"]
        assert r["timing"]["median_ms"] > 0 and len(r["timing"]["samples_ms"]) >= 2
        assert r["metrics"]["tokens_per_s"] > 0 and r["work"]["flops"] > 0
        assert r["env"]["versions"]["torch"] and r["ceilings"]["copy_gbps"] > 0
    throughput = next(r for r in records if r["workload"] == "throughput")
    assert throughput["extra"]["batch"] == 4 and throughput["extra"]["limited_by"] == "max_batch"


@pytest.mark.parametrize(
    "impl",
    [i for i in catalog.model_implementations() if i.backend == "torch"],
    ids=lambda i: i.name,
)
def test_torch_inference_builds_no_autograd_graph(impl):
    """prefill and decode are inference for every torch implementation alike: a handle that left
    autograd on would record a graph and keep activations (slower, and an unfair comparison)."""
    if catalog.missing_requirements(impl):
        pytest.skip(catalog.missing_requirements(impl))
    import torch

    from bench.backends import backend_for
    from bench.worker import source_model

    model = model_for(impl)
    handle = catalog.adapter(impl).build(
        source_model(model, "float32", "cpu"), "float32", backend_for("torch", "cpu")
    )
    tokens = torch.randint(0, 256, (2, 9))
    pos = torch.arange(9).repeat(2, 1)
    logits, cache = handle.prefill(tokens, pos)
    assert not logits.requires_grad
    logits, _ = handle.decode(tokens[:, :1], pos[:, -1:] + 1, handle.fresh(cache, 1))
    assert not logits.requires_grad


@pytest.mark.parametrize(
    "impl", [i for i in catalog.IMPLEMENTATIONS if i.kind == "kernel"], ids=lambda i: i.name
)
def test_every_available_kernel_implementation_runs_its_ops(impl, tmp_path):
    if catalog.missing_requirements(impl):
        pytest.skip(catalog.missing_requirements(impl))
    body = "".join(
        f'[[case]]\nworkload = "kernel_{op}"\nimpls = ["{impl.name}"]\n'
        "seq_len = 24\nbatch = 2\nwidth = 40\nbackward = [0, 1]\n"
        for op in impl.ops
    )
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert len(records) == 2 * len(impl.ops)
    if all(r["status"] == "unavailable" for r in records):
        pytest.skip(records[0]["error"])  # e.g. fla and accelerated-scan need a GPU
    for r in records:
        assert r["status"] == "ok", r.get("error")
        c = r["correctness"]
        assert c["passed"] and c["reference_dtype"] == "float64"
        assert set(c["rel_err_by_output"]) >= {"h" if r["workload"] == "kernel_scan" else "y"}
        if r["params"]["backward"]:
            assert any(k.startswith("d") for k in c["rel_err_by_output"])  # gradients gated too
        assert r["metrics"]["gbps"] > 0 and r["work"]["bytes"] > 0


def test_one_name_runs_as_the_model_and_as_its_kernels(tmp_path):
    """ours-jax-optimized is a model entry and a kernel entry: in one suite, each workload goes
    to the entry of its kind (the optimized model; kernels.pallas)."""
    assert catalog.implementation("ours-jax-optimized", kind="model").kind == "model"
    assert catalog.implementation("ours-jax-optimized", kind="kernel").ops == ("scan", "rglru")
    with pytest.raises(ValueError, match="unknown implementation 'ours-triton'"):
        catalog.implementation("ours-triton", kind="model")
    if catalog.missing_requirements(catalog.implementation("ours-jax-optimized")):
        pytest.skip("no jax")
    body = """
[[case]]
workload = "kernel_scan"
impls = ["ours-jax-optimized"]
seq_len = 12
batch = 1
width = 16
backward = 0
[[case]]
workload = "prefill"
models = ["hawk-tiny"]
impls = ["ours-jax-optimized"]
batch = 1
prompt = 8
"""
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    by = {r["workload"]: r for r in records}
    assert sorted(by) == ["kernel_scan", "prefill"], [r.get("error") for r in records]
    assert all(r["status"] == "ok" and r["impl"] == "ours-jax-optimized" for r in records)
    assert by["kernel_scan"]["correctness"]["reference_dtype"] == "float64"  # the kernel gate
    assert by["kernel_scan"]["work"]["bytes"] > 0 and "elements" in by["kernel_scan"]["extra"]
    assert by["prefill"]["metrics"]["tokens_per_s"] > 0 and by["prefill"]["model"] == "hawk-tiny"


def test_kernel_cases_are_validated(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text('[[case]]\nworkload = "kernel_scan"\nmodels = ["hawk-tiny"]\nseq_len = 8\n')
    with pytest.raises(suite.SuiteError, match="takes no 'models'"):
        suite.load(str(path), "cpu")
    path.write_text('[[case]]\nworkload = "kernel_rglru"\nimpls = ["fla-chunk"]\nseq_len = 8\n')
    with pytest.raises(
        suite.SuiteError,
        match="does not run workload 'kernel_rglru'; implementations that do: ours-triton",
    ):
        suite.load(str(path), "cpu")
    path.write_text(
        '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nimpls = ["ours-triton"]\nprompt = 8\n'
    )
    with pytest.raises(suite.SuiteError, match="does not run workload 'prefill'"):
        suite.load(str(path), "cpu")
    path.write_text('[[case]]\nworkload = "kernel_scan"\nseq_len = 8\nbackward = 2\n')
    with pytest.raises(suite.SuiteError, match="backward must be 0 or 1"):
        suite.load(str(path), "cpu")


def with_fakes(monkeypatch, *names):
    monkeypatch.setattr(
        catalog, "IMPLEMENTATIONS", catalog.IMPLEMENTATIONS + tuple(spec(n) for n in names)
    )


def test_failures_are_recorded_and_the_sweep_goes_on(monkeypatch, tmp_path):
    with_fakes(monkeypatch, "wrong", "raising", "oom", "unsupported")
    body = """
[[case]]
workload = "prefill"
models = ["griffin-tiny"]
impls = ["fake-wrong", "fake-raising", "fake-oom", "fake-unsupported", "ours-torch-reference"]
batch = 1
prompt = [8, 12]
"""
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    by = {(r["impl"], r["params"]["prompt"]): r for r in records}
    assert len(by) == 10
    for prompt in (8, 12):
        wrong = by["fake-wrong", prompt]
        assert wrong["status"] == "mismatch" and wrong["timing"] is None
        assert wrong["correctness"]["rel_err"] > wrong["correctness"]["tol"]
        assert "differs from the reference" in wrong["error"]
        assert by["fake-raising", prompt]["status"] == "error"
        assert "boom" in by["fake-raising", prompt]["error"]
        assert by["fake-oom", prompt]["status"] == "oom"
        assert by["fake-unsupported", prompt]["status"] == "unavailable"
        assert (
            "not supported by this test implementation" in by["fake-unsupported", prompt]["error"]
        )
        assert by["ours-torch-reference", prompt]["status"] == "ok"  # measured after the failures


def test_warnings_of_a_point_go_into_its_record(monkeypatch, tmp_path):
    with_fakes(monkeypatch, "warning")
    body = """
[[case]]
workload = "prefill"
models = ["griffin-tiny"]
impls = ["fake-warning", "ours-torch-reference"]
batch = 1
prompt = 8
"""
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    by = {r["impl"]: r for r in records}
    warned = by["fake-warning"]
    assert warned["status"] == "ok"
    assert warned["extra"]["warnings"] == [
        "UserWarning: the compiled step failed; eager step (test)"
    ]
    assert "warnings" not in by["ours-torch-reference"]["extra"]
    assert (
        results.note(warned) == "warning: UserWarning: the compiled step failed; eager step (test)"
    )
    assert results.note(by["ours-torch-reference"]) == ""


def test_a_crashing_worker_costs_only_its_point(monkeypatch, tmp_path):
    with_fakes(monkeypatch, "crash")
    body = """
[[case]]
workload = "prefill"
models = ["griffin-tiny"]
impls = ["fake-crash"]
batch = 1
prompt = [8, 16, 24]
"""
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl", isolate=True)
    status = {r["params"]["prompt"]: r for r in records}
    assert status[8]["status"] == "ok" and status[24]["status"] == "ok"
    assert status[16]["status"] == "error" and "SIGSEGV" in status[16]["error"]


def test_a_hanging_worker_is_killed_and_costs_only_its_point(monkeypatch, tmp_path):
    with_fakes(monkeypatch, "hang")
    body = """
[[case]]
workload = "prefill"
models = ["griffin-tiny"]
impls = ["fake-hang"]
batch = 1
prompt = [8, 16, 24]
"""
    s = suite.load(str(write_suite(tmp_path, body)), "cpu")
    runner.run(s, tmp_path / "out.jsonl", "cpu", isolate=True, progress=False, point_timeout=20)
    records, _ = read_records(tmp_path / "out.jsonl")
    status = {r["params"]["prompt"]: r for r in records if r["workload"] == "prefill"}
    assert status[8]["status"] == "ok" and status[24]["status"] == "ok"
    assert status[16]["status"] == "error" and "no result within 20 s" in status[16]["error"]


def test_training_a_model_larger_than_the_device_records_needs_several_gpus(monkeypatch, tmp_path):
    from bench.backends import TorchBackend

    monkeypatch.setattr(TorchBackend, "device_memory_bytes", lambda self: 10**6)  # 1 MB "GPU"
    body = """
[[case]]
workload = "train_step"
models = ["griffin-tiny"]
impls = ["ours-torch-reference"]
batch = 1
seq_len = 8
"""
    (rec,) = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert rec["status"] == "oom" and "needs several GPUs: training griffin-tiny" in rec["error"]


def test_checkpointed_training_runs_ours_and_is_unavailable_for_a_peer(tmp_path):
    body = """
[[case]]
workload = "train_step"
models = ["griffin-tiny"]
impls = ["ours-torch-optimized", "ours-jax-reference", "recurrentgemma-torch"]
batch = 2
seq_len = 16
checkpoint = 1
"""
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    by_impl = {r["impl"]: r for r in records}
    for impl in ("ours-torch-optimized", "ours-jax-reference"):
        rec = by_impl[impl]
        assert rec["status"] == "ok", rec.get("error")
        assert rec["params"]["checkpoint"] == 1 and "checkpoint=1" in rec["key"]
        assert rec["correctness"]["passed"]
    peer = by_impl["recurrentgemma-torch"]
    assert peer["status"] == "unavailable"
    assert "offers no activation checkpointing" in peer["error"]


def test_missing_dependency_is_unavailable_not_a_fallback(monkeypatch, tmp_path):
    ghost = catalog.Implementation(
        "ghost", "torch", "bench.impls.ours_torch", ("no_such_module_xyz",), "peer", "test"
    )
    monkeypatch.setattr(catalog, "IMPLEMENTATIONS", (*catalog.IMPLEMENTATIONS, ghost))
    body = '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nimpls = ["ghost"]\nprompt = 8\n'
    (rec,) = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert rec["status"] == "unavailable" and "no_such_module_xyz" in rec["error"]


def test_killed_sweep_resumes_without_repeating_a_point(tmp_path):
    body = """
[[case]]
workload = "decode"
models = ["hawk-tiny", "griffin-tiny"]
impls = ["ours-torch-reference"]
batch = 1
prompt = 4
steps = [1, 2, 3, 4, 5, 6]
"""
    path = write_suite(tmp_path, body)
    out_dir = tmp_path / "out"
    records_file = out_dir / "t.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        str(path),
        "--out",
        str(out_dir),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if records_file.exists() and len(recorded_keys(records_file)) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the worker dies with its parent
    finished = recorded_keys(records_file)
    assert 3 <= len(finished) < 12
    with open(records_file, "a") as f:  # a write torn by the kill
        f.write('{"schema": 1, "run_id": "x", "key": "decode|hawk')
    assert any("not valid JSON" in p for p in read_records(records_file)[1])

    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    records, problems = read_records(records_file)
    assert not problems  # the torn line was cut away before appending
    keys = [r["key"] for r in records if r["workload"] != "ceiling"]
    assert len(keys) == len(set(keys)) == 12
    before = {r["key"]: r["run_id"] for r in records if r["key"] in finished}
    assert len(set(before.values())) == 1  # finished points kept from the first run
    assert len(load(records_file)) == len(records)


def test_rerun_of_a_complete_suite_measures_nothing(tmp_path):
    body = '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nimpls = ["ours-torch-reference"]\nprompt = 8\n'
    path, out = write_suite(tmp_path, body), tmp_path / "out.jsonl"
    run_suite(path, out)
    s = suite.load(str(path), "cpu")
    assert runner.run(s, out, "cpu", isolate=False, progress=False)["points"] == 0


def test_retry_and_force_measure_again_and_the_newest_record_wins(tmp_path):
    body = (
        '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny", "mqa-tiny"]\n'
        'impls = ["ours-torch-reference"]\nprompt = 8\n'
    )
    path, out = write_suite(tmp_path, body), tmp_path / "out.jsonl"
    first = run_suite(path, out)
    assert [r["status"] for r in first] == ["ok", "ok"]
    failed = {**first[0], "run_id": "older", "status": "error", "error": "planted", "timing": None}
    RecordWriter(out).append(failed)  # the newest record of that point is now an error
    assert results.latest_status(out)[failed["key"]] == "error"
    s = suite.load(str(path), "cpu")
    assert runner.todo_points(s, out) == []
    assert [p.key for p in runner.todo_points(s, out, "failed")] == [failed["key"]]
    assert runner.run(s, out, "cpu", isolate=False, progress=False, rerun="failed")["points"] == 1
    assert set(results.latest_status(out).values()) == {"ok"}
    assert runner.run(s, out, "cpu", isolate=False, progress=False, rerun="all")["points"] == 2
    records = [r for r in read_records(out)[0] if r["workload"] != "ceiling"]
    assert len(records) == 2 + 1 + 1 + 2  # the history stays in the file
    # the report and show read the newest record of each key
    from bench.report import data

    df, _, _ = data.load([out])
    assert len(df) == 2 and set(df["status"]) == {"ok"}
    with pytest.raises(ValueError, match="valid values"):
        runner.run(s, out, "cpu", isolate=False, progress=False, rerun="some")


def test_a_second_run_on_one_records_file_stops_with_one_line(tmp_path):
    body = '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nimpls = ["ours-torch-reference"]\nprompt = 8\n'
    path, out = write_suite(tmp_path, body), tmp_path / "out.jsonl"
    s = suite.load(str(path), "cpu")
    with runner._Lock(out):
        with pytest.raises(ValueError, match=r"being written by another run \(pid \d+ since"):
            runner.run(s, out, "cpu", isolate=False, progress=False)
        assert not out.exists()  # nothing was measured or written
    assert not (tmp_path / "out.jsonl.lock").exists()
    assert runner.run(s, out, "cpu", isolate=False, progress=False)["points"] == 1


def test_ctrl_c_keeps_what_was_recorded_and_says_how_to_resume(tmp_path):
    body = """
[[case]]
workload = "decode"
models = ["hawk-tiny"]
impls = ["ours-torch-reference"]
batch = 1
prompt = 4
steps = [1, 2, 3, 4, 5, 6, 7, 8]
"""
    path, out_dir = write_suite(tmp_path, body), tmp_path / "out"
    records_file = out_dir / "t.jsonl"
    cmd = [sys.executable, "-m", "bench", "run", str(path), "--out", str(out_dir)]
    cmd += ["--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if records_file.exists() and len(recorded_keys(records_file)) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    n = len(recorded_keys(records_file))
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: {n} point(s) recorded in {records_file} by this run; rerun the same "
        "command to resume"
    )
    assert not (out_dir / "t.jsonl.lock").exists()


def test_the_report_follows_out():
    from bench.__main__ import report_path

    assert report_path(Path("results/local/smoke.jsonl")) == Path("reports/local/smoke.html")
    assert report_path(Path("results/h200/decode.jsonl")) == Path("reports/h200-decode.html")
    assert report_path(Path("/tmp/x/smoke.jsonl")) == Path("/tmp/x/smoke.html")


def test_records_load_tolerates_damage(tmp_path):
    path = tmp_path / "r.jsonl"
    good = {"schema": SCHEMA_VERSION, "run_id": "r", "key": "k", "workload": "prefill"}
    good.update(model="hawk-tiny", impl="x", status="ok", timing={"median_ms": 1.5})
    lines = [
        json.dumps(good),
        json.dumps({**good, "schema": 99, "key": "k2"}),
        json.dumps({"schema": SCHEMA_VERSION, "key": "k3"}),
        "[1, 2]",
        '{"schema": 1, "tor',
    ]
    path.write_text("\n".join(lines))
    records, problems = read_records(path)
    assert [r["key"] for r in records] == ["k"]
    text = "\n".join(problems)
    assert "schema version 99" in text and "lacks fields" in text and "torn write" in text
    with pytest.warns(UserWarning):
        df = load(path)
    assert df["timing.median_ms"].tolist() == [1.5]
    RecordWriter(path).append({**good, "key": "k4"})  # repairs the torn tail first
    assert [r["key"] for r in read_records(path)[0]] == ["k", "k4"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("[[case]\nworkload = 1", "not valid TOML"),
        (
            '[[case]]\nworkload = "prefil"\nmodels = ["hawk-tiny"]\nprompt = 8',
            "unknown workload 'prefil'; valid workloads: prefill, decode",
        ),
        (
            '[[case]]\nworkload = "prefill"\nmodels = ["hawk-2b"]\nprompt = 8',
            "unknown model 'hawk-2b'; valid models: hawk-100m",
        ),
        (
            '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nimpls = ["fla"]\nprompt = 8',
            "unknown implementation 'fla'; valid implementations: ours-torch-reference",
        ),
        (
            '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nprompts = 8',
            "no parameter(s) ['prompts']; valid: prompt, batch",
        ),
        (
            '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nprompt = -1',
            "prompt must be a positive integer",
        ),
        (
            '[[case]]\nworkload = "train_step"\nmodels = ["hawk-tiny"]\nseq_len = 8',
            "exactly one of batch, tokens_per_batch",
        ),
        (
            '[[case]]\nworkload = "train_step"\nmodels = ["hawk-tiny"]\nseq_len = 8\n'
            "batch = 1\ncheckpoint = 2",
            "checkpoint must be 1 (activation checkpointing on) or left out (off), got 2",
        ),
        (
            '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nprompt = 8\ndtype = "fp8"',
            "unknown dtype 'fp8'",
        ),
        (
            'colour = "red"\n[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nprompt = 8',
            "unknown top-level keys ['colour']",
        ),
    ],
)
def test_malformed_suites_give_clear_errors(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(suite.SuiteError) as err:
        suite.load(str(path), "cpu")
    assert message in str(err.value)


def test_cli_errors_name_the_valid_values(capsys):
    assert cli(["run", "no-such-suite", "--dry-run"]) == 2
    assert "unknown suite 'no-such-suite'; valid suites:" in capsys.readouterr().err
    assert cli(["run", "smoke", "--impl", "fast-one", "--dry-run"]) == 2
    assert "valid implementations: ours-torch-reference" in capsys.readouterr().err
    assert cli(["run", "smoke", "--model", "griffin-2b", "--dry-run"]) == 2
    assert "valid models:" in capsys.readouterr().err


def test_cli_bad_point_timeout_is_one_line_before_anything_runs(tmp_path, capsys):
    body = '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nprompt = 8\n'
    path = write_suite(tmp_path, body)
    args = ["run", str(path), "--device", "cpu", "--out", str(tmp_path / "o")]
    assert cli([*args, "--point-timeout", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --point-timeout must be a positive number of seconds, got -1"
    assert not (tmp_path / "o").exists()


def test_cli_dry_run_lists_only_what_would_run(tmp_path, capsys):
    body = '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny", "mqa-tiny"]\n'
    body += 'impls = ["ours-torch-reference"]\nprompt = 8\n'
    path = write_suite(tmp_path, body)
    run_suite(path, tmp_path / "o" / "t.jsonl", models=["hawk-tiny"])
    args = ["run", str(path), "--device", "cpu", "--out", str(tmp_path / "o"), "--dry-run"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "mqa-tiny" in out and "hawk-tiny" not in out
    assert "1 points would run" in out and "(1 already recorded)" in out
    assert cli([*args, "--force"]) == 0
    assert "2 points would run" in capsys.readouterr().out


def test_cli_bad_paths_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "f").write_text("")
    (tmp_path / "bin.toml").write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff")
    rec = {"schema": SCHEMA_VERSION, "run_id": "r", "key": "k", "workload": "prefill"}
    rec.update(model="hawk-tiny", impl="x", status="ok", timing={"median_ms": 1.5})
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    cases = [
        (["show", "d"], "d is a folder; give its records files"),
        (["show", "nofile.jsonl"], "no such results file: nofile.jsonl"),
        (["report", "empty.jsonl", "-o", "e.html"], "no records in empty.jsonl"),
        (["report", "r.jsonl", "-o", "d"], "-o d is a folder"),
        (["report", "r.jsonl", "-o", "/proc/x.html"], "/proc/x.html: "),
        (["run", "nothere.toml", "--dry-run"], "nothere.toml: no such suite file"),
        (["run", "./bin.toml", "--dry-run"], "bin.toml: not a TOML file"),
        (["run", "smoke", "--out", "f", "--dry-run"], "--out f is a file"),
    ]
    for argv, message in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, (argv, err)
        assert "Traceback" not in err


def test_a_run_where_every_point_failed_exits_1(monkeypatch, tmp_path, capsys):
    ghost = catalog.Implementation(
        "ghost", "torch", "bench.impls.ours_torch", ("no_such_module_xyz",), "peer", "test"
    )
    monkeypatch.setattr(catalog, "IMPLEMENTATIONS", (*catalog.IMPLEMENTATIONS, ghost))
    body = '[[case]]\nworkload = "prefill"\nmodels = ["hawk-tiny"]\nimpls = ["ghost"]\nprompt = 8\n'
    path = write_suite(tmp_path, body)
    argv = ["run", str(path), "--device", "cpu", "--out", str(tmp_path / "o"), "--no-isolate"]
    argv += ["--quiet", "--report", str(tmp_path / "r.html")]
    assert cli(argv) == 1
    assert "no point of this run succeeded (1 unavailable)" in capsys.readouterr().err
    assert cli(argv) == 0  # nothing left to run: nothing failed


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("griffin-bench ")


def test_cli_list_and_dry_run(capsys):
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("recurrentgemma-2b", "ours-torch-reference", "throughput", "rg-2b"):
        assert name in out
    lines = out.splitlines()
    hawk = next(line for line in lines if line.split()[:1] == ["hawk-tiny"])
    assert "no attention" in hawk and "215k" in hawk and "0.000" not in hawk
    assert "1.83B" in next(line for line in lines if line.split()[:1] == ["hawk-1b"])
    # every workload says what it measures, in one aligned column
    from bench.workloads import WORKLOADS

    block = lines[lines.index("workloads:") + 1 : lines.index("suites:")]
    assert len(block) == 1 + len(WORKLOADS)
    starts = {block[0].index("what it measures")}
    for line, wl in zip(block[1:], WORKLOADS.values(), strict=True):
        assert wl.description and line.endswith(wl.description)
        starts.add(line.index(wl.description))
    assert len(starts) == 1
    assert cli(["run", "rg-2b", "--device", "cuda", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "prefill recurrentgemma-2b recurrentgemma-torch bfloat16 batch=1 prompt=2048" in out
    assert cli(["run", "rg-2b", "--device", "cpu", "--dry-run"]) == 0
    assert "recurrentgemma-tiny" in capsys.readouterr().out  # the suite's CPU overrides


def test_run_without_plotly_keeps_its_records_and_says_how_to_report(monkeypatch, tmp_path, capsys):
    """A GPU image without plotly: the sweep's records are written, the report is skipped with a
    message (not a traceback after minutes of measurements)."""
    for name in [
        m for m in sys.modules if m == "plotly" or m.startswith(("plotly.", "bench.report"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly -> ImportError
    body = """
[[case]]
workload = "prefill"
models = ["hawk-tiny"]
impls = ["ours-torch-reference"]
batch = 1
prompt = 4
"""
    path = write_suite(tmp_path, body)
    argv = ["run", str(path), "--device", "cpu", "--out", str(tmp_path), "--no-isolate", "--quiet"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "report:  not written (plotly is not installed" in out
    records, problems = read_records(tmp_path / "t.jsonl")
    assert not problems and [r["status"] for r in records if r["workload"] == "prefill"] == ["ok"]


def test_every_suite_file_is_valid():
    for name in catalog.suites():
        for device in ("cpu", "cuda"):
            assert suite.load(name, device).points, name


def test_show_prints_a_table(tmp_path, capsys):
    path = str(ROOT / "results" / "h100" / "rg-2b.jsonl")
    assert cli(["show", path]) == 0
    out = capsys.readouterr().out
    assert "recurrentgemma-torch" in out and "transformers-gemma" in out
    assert max(len(line) for line in out.splitlines()) <= 120
    lines = out.splitlines()
    assert lines[0] == "decode:"  # a block per workload
    assert lines[1].split()[:5] == ["model", "impl", "params", "status", "median_ms"]
    assert "spread" in lines[1] and "reps" in lines[1]
    assert {"prefill:", "train_step:"} <= set(lines)


def test_show_filters_and_formats(capsys):
    import csv
    import io

    path = str(ROOT / "results" / "h100" / "rg-2b.jsonl")
    args = ["show", path, "--impl", "transformers-gemma", "--workload", "prefill"]
    assert cli([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {(r["impl"], r["workload"]) for r in rows} == {
        ("transformers-gemma", "prefill")
    }
    assert all(r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] and r["reps"] for r in rows)
    assert cli([*args, "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == len(rows) and float(table[0]["median_ms"]) == rows[0]["median_ms"]
    assert cli([*args, "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| workload |") and lines[1].startswith("|---|")
    assert len(lines) == 2 + len(rows)
    assert cli(["show", path, "--status", "mismatch", "--model", "gemma-2b"]) == 0
    assert "no records match the filters" in capsys.readouterr().out


def test_the_smoke_suite_covers_every_model_implementation_and_workload():
    """What `nox -s bench` promises without a GPU: every model implementation, every model
    workload, and a kernel case with our kernels beside a peer."""
    s = suite.load("smoke", "cpu")
    from bench.workloads import WORKLOADS

    model_impls = {i.name for i in catalog.model_implementations()}
    assert model_impls <= {p.impl for p in s.points}
    model_workloads = {n for n, w in WORKLOADS.items() if w.kind == "model"}
    assert model_workloads <= {p.workload for p in s.points}
    kernel = {p.impl for p in s.points if p.workload.startswith("kernel_")}
    assert {"ours-triton", "ours-jax-optimized"} <= kernel and any(
        "recurrentgemma" in i for i in kernel
    )
