"""python -m bench compare: ratio of medians, bootstrap interval, Mann-Whitney p and verdicts over
two synthetic records files."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bench import compare
from bench.__main__ import main as cli
from bench.results import SCHEMA_VERSION

ENV = {
    "device": "cuda",
    "gpu": {"name": "NVIDIA H200"},
    "versions": {"torch": "2.11.0", "jax": "0.11.2", "triton": "3.6.0"},
}


def record(impl, samples, *, status="ok", batch=1, env=ENV, median=None, key_suffix=""):
    params = {"batch": batch, "seq_len": 64}
    key = f"train_step|griffin-tiny|float32|batch={batch},seq_len=64|{impl}{key_suffix}"
    timing = None
    if samples is not None or median is not None:
        timing = {"median_ms": median if median is not None else float(np.median(samples))}
        if samples is not None:
            timing["samples_ms"] = [float(x) for x in samples]
    return {
        "schema": SCHEMA_VERSION,
        "run_id": "r",
        "key": key,
        "workload": "train_step",
        "model": "griffin-tiny",
        "impl": impl,
        "dtype": "float32",
        "params": params,
        "status": status,
        "timing": timing if status == "ok" else None,
        "env": env,
    }


def ceiling(env=ENV):
    return {
        "schema": SCHEMA_VERSION,
        "run_id": "r",
        "key": "ceiling|r",
        "workload": "ceiling",
        "model": None,
        "impl": None,
        "status": "ok",
        "env": env,
    }


def lognormal(seed, scale=1.0, n=30):
    return 10.0 * scale * np.random.default_rng(seed).lognormal(0.0, 0.02, n)


def write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path):
    """A and B: a 10% slowdown, an unchanged point, a one-sample point, a point only in each
    file, an oom point, and a key recorded twice in B (the last one counts)."""
    a = [
        ceiling(),
        record("shifted", lognormal(1)),
        record("same", lognormal(2)),
        record("single", [10.0]),
        record("only-a", lognormal(3)),
        record("oom", lognormal(4)),
    ]
    b = [
        ceiling(),
        record("shifted", lognormal(5)),  # superseded by the record below
        record("shifted", lognormal(6, scale=1.1)),
        record("same", lognormal(7)),
        record("single", lognormal(8)),
        record("only-b", lognormal(9)),
        record("oom", None, status="oom"),
    ]
    return write(tmp_path / "a.jsonl", a), write(tmp_path / "b.jsonl", b)


def rows_by_impl(c):
    return {r.impl: r for r in c.rows}


def test_verdicts(files):
    c = compare.compare_files(*files)
    rows = rows_by_impl(c)
    assert set(rows) == {"shifted", "same", "single"}
    shifted = rows["shifted"]
    assert shifted.verdict == "slower"
    assert 1.0 < shifted.interval[0] <= shifted.ratio <= shifted.interval[1]
    assert shifted.ratio == pytest.approx(1.1, rel=0.03)
    assert shifted.p < 1e-6
    same = rows["same"]
    assert same.verdict == "no change"
    assert same.interval[0] < 1.0 < same.interval[1]
    assert same.p > 0.05
    single = rows["single"]
    assert single.interval is None and single.p is None
    assert single.verdict == "unknown (n<5)"
    assert single.ratio == pytest.approx(np.median(lognormal(8)) / 10.0)
    assert c.only_a == [compare.label(record("only-a", [1]))]
    assert c.only_b == [compare.label(record("only-b", [1]))]
    assert c.not_ok == [(compare.label(record("oom", [1])), "ok", "oom")]
    assert c.differences == []
    assert c.any_slower


def test_few_repetitions_never_claim_a_change():
    """Two or three samples a side: no interval, whatever the medians (a 3-sample bootstrap is
    narrow by construction); at five, a clear shift is called only if the rank test agrees."""
    for n in (2, 3, 4):
        a, b = [record("x", [10.0 + i * 0.01 for i in range(n)])], [record("x", [12.0] * n)]
        assert compare.compare(a, b).rows[0].verdict == "unknown (n<5)"
    a = [record("x", [10.0, 10.1, 10.2, 10.3, 10.4])]
    b = [record("x", [12.0, 12.1, 12.2, 12.3, 12.4])]
    row = compare.compare(a, b).rows[0]
    assert row.p < 0.05 and row.verdict == "slower"
    assert compare.verdict((1.01, 1.2), p=0.3) == "no change"  # the interval alone is not enough


def test_faster_and_deterministic():
    a, b = [record("x", lognormal(1))], [record("x", lognormal(2, scale=0.9))]
    first, second = compare.compare(a, b), compare.compare(a, b)
    assert first.rows[0].verdict == "faster"
    assert first.rows[0].interval[1] < 1
    assert first.rows == second.rows  # fixed seed: the same interval every time


def test_median_fallback_says_no_interval():
    a = [record("x", None, median=10.0)]
    b = [record("x", lognormal(1))]
    row = compare.compare(a, b).rows[0]
    assert row.median_a_ms == 10.0 and row.n_a == 0
    assert row.interval is None and row.verdict == "unknown (n<5)"
    assert "no interval" in compare.cells(row)


def test_mann_whitney_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    cases = [
        (rng.normal(0, 1, 30), rng.normal(0.5, 1, 25)),
        (rng.integers(0, 5, 20).astype(float), rng.integers(1, 6, 17).astype(float)),  # ties
        (np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])),
    ]
    for x, y in cases:
        want = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
        assert compare.mann_whitney_p(x, y) == pytest.approx(want, rel=1e-9)
    assert compare.mann_whitney_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert compare.mann_whitney_p([1.0], [1.0, 2.0]) is None


def test_cli_table(files, capsys):
    assert cli(["compare", *map(str, files)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["workload", "model", "impl"] and header[-1] == "verdict"
    for word in ("median A", "median B", "ratio", "95% interval", "p "):
        assert word in out.splitlines()[0]
    assert "slower" in out and "no change" in out and "unknown (n<5)" in out
    assert "only in A: 1" in out and "only in B: 1" in out and "only-a" in out
    assert "not compared (status A ok, B oom)" in out
    assert "warning" not in out  # same device and versions: nothing to flag


def test_fail_on_slower(files, tmp_path):
    assert cli(["compare", *map(str, files), "--fail-on-slower"]) == 1
    a, _ = files
    assert cli(["compare", str(a), str(a), "--fail-on-slower"]) == 0


def test_device_and_version_differences(tmp_path, capsys):
    env_b = {
        "device": "cuda",
        "gpu": {"name": "NVIDIA H100 80GB HBM3"},
        "versions": {"torch": "2.12.0", "jax": "0.11.2", "triton": "3.7.0"},
    }
    a = write(tmp_path / "a.jsonl", [record("x", lognormal(1))])
    b = write(tmp_path / "b.jsonl", [record("x", lognormal(2), env=env_b)])
    assert cli(["compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "warning: device differs: A NVIDIA H200, B NVIDIA H100 80GB HBM3"
    assert lines[1] == "warning: torch version differs: A 2.11.0, B 2.12.0"
    assert lines[2] == "warning: triton version differs: A 3.6.0, B 3.7.0"
    assert lines[3].startswith("workload")
    # machine-readable formats keep stdout clean and name the differences on stderr
    assert cli(["compare", str(a), str(b), "--format", "json"]) == 0
    cap = capsys.readouterr()
    assert len(json.loads(cap.out)["differences"]) == 3
    assert "device differs" in cap.err


def test_csv_and_json_parse(files, capsys):
    assert cli(["compare", *map(str, files), "--format", "csv"]) == 0
    cap = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(cap.out)))
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["shifted"]["verdict"] == "slower"
    assert float(by_impl["shifted"]["low"]) > 1
    assert by_impl["single"]["low"] == "" and by_impl["single"]["verdict"] == "unknown (n<5)"
    assert "only in A: 1" in cap.err
    assert cli(["compare", *map(str, files), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_impl = {r["impl"]: r for r in data["rows"]}
    assert by_impl["shifted"]["verdict"] == "slower" and by_impl["shifted"]["interval"][0] > 1
    assert by_impl["single"]["interval"] is None
    oom = compare.label(record("oom", [1]))
    assert data["not_ok"] == [{"point": oom, "status_a": "ok", "status_b": "oom"}]
    assert len(data["only_a"]) == len(data["only_b"]) == 1


def test_html_page(files, tmp_path, capsys):
    pytest.importorskip("plotly")
    page = tmp_path / "out" / "cmp.html"
    assert cli(["compare", *map(str, files), "--html", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("<!doctype html>") and '<table id="compare">' in text
    for h in ("median A", "95% interval", "verdict"):
        assert f"<th>{h}</th>" in text
    assert '<td class="verdict-fails">slower</td>' in text
    assert "unknown (n&lt;5)" in text and "only in A: 1" in text
    assert str(page) in capsys.readouterr().out


def _file(name, text):
    def make(d: Path) -> Path:
        (d / name).write_text(text)
        return d / name

    return make


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda d: d / "missing.jsonl", "no such file"),
        (lambda d: d, "is a folder"),
        (_file("x.json", '{"a":\n 1}\n'), "no records"),
        (_file("e.jsonl", ""), "no records"),
    ],
    ids=["missing", "folder", "not-json-lines", "empty"],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, make, says):
    bad = make(tmp_path)
    good = files[0]
    for argv in ([str(bad), str(good)], [str(good), str(bad)]):
        assert cli(["compare", *argv]) == 2
        cap = capsys.readouterr()
        assert cap.out == ""
        lines = cap.err.splitlines()
        assert len(lines) == 1 and says in lines[0] and str(bad) in lines[0]
        assert "Traceback" not in cap.err


def test_torn_line_is_a_warning(files, capsys):
    a, b = files
    with open(b, "a") as f:
        f.write('{"schema": 1, "key": "torn')
    assert cli(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("warning: ") and "not valid JSON" in out
