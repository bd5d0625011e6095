"""HTML reports: built from records alone, every figure rendered in a real browser (Debian's
chromium through playwright), failed points never drawn, damaged files never a traceback."""

import copy
import itertools
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main as cli
from bench.report import build
from bench.report import page as report_page
from bench.results import read_records

ROOT = Path(__file__).resolve().parent.parent
SUITE = """dtype = "float32"
[timing]
warmup = 1
min_reps = 2
max_reps = 3
budget_s = 0.01
[[case]]
workload = "prefill"
models = ["griffin-tiny", "mqa-tiny"]
impls = ["ours-torch-reference"]
prompt = [8, 16]
[[case]]
workload = "decode"
models = ["griffin-tiny", "mqa-tiny"]
impls = ["ours-torch-reference"]
batch = 2
prompt = [1, 8]
steps = [2, 4]
[[case]]
workload = "train_step"
models = ["griffin-tiny", "mqa-tiny", "hawk-tiny"]
impls = ["ours-torch-reference"]
tokens_per_batch = 64
seq_len = [16, 32]
[[case]]
workload = "throughput"
models = ["griffin-tiny"]
impls = ["ours-torch-reference"]
gen_len = [2, 4]
max_batch = 4
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small real sweep through the README's run command (CPU, tiny presets), plus one record
    that failed its gate and one that errored."""
    d = tmp_path_factory.mktemp("report")
    (d / "tiny.toml").write_text(SUITE)
    args = ["run", str(d / "tiny.toml"), "--out", str(d), "--report", str(d / "tiny.html")]
    assert cli([*args, "--device", "cpu", "--no-isolate", "--quiet"]) == 0
    records, _ = read_records(d / "tiny.jsonl")
    point = next(r for r in records if r["workload"] == "decode")
    bad = copy.deepcopy(point)
    bad.update(
        impl="fake-wrong",
        key=point["key"] + "-wrong",
        status="mismatch",
        error="output differs from the reference",
    )
    broken = copy.deepcopy(point)
    broken.update(impl="fake-raising", key=point["key"] + "-raising", status="error", timing=None)
    with open(d / "tiny.jsonl", "a") as f:
        f.write(json.dumps(bad) + "\n" + json.dumps(broken) + "\n")
    return d


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium")
    return path


def render(html_path: Path) -> dict:
    """Open the page headless; return console errors and, per figure, the traces drawn."""
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html_path.resolve().as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.plotly-graph-div .main-svg').length"
            " >= document.querySelectorAll('.plotly-graph-div').length"
        )
        result = page.evaluate(
            """() => ({
              figures: Array.from(document.querySelectorAll('section.figure')).map(s => {
                const div = s.querySelector('.plotly-graph-div');
                return {id: s.id, noData: !!s.querySelector('.no-data'),
                        traces: div ? div.data.length : 0,
                        drawn: div ? div.querySelectorAll('g.trace').length : 0,
                        names: div ? div.data.map(t => t.name) : [],
                        // what each trace is drawn in and what its colour stands for
                        colours: div ? div.data.map(t => ({
                          name: t.name,
                          colour: (t.marker && typeof t.marker.color === 'string'
                                   ? t.marker.color : null) || (t.line && t.line.color) || null,
                          of: (t.meta && t.meta.colour_of) || null})) : []};
              }),
              rows: document.querySelectorAll('#records-body tr').length,
              statuses: Array.from(document.querySelectorAll('#records-body td.status-mismatch')).length,
            })"""
        )
        browser.close()
    result["errors"] = errors
    return result


def _rgb(colour: str) -> tuple[int, ...]:
    c = colour.strip().lower()
    if c.startswith("#"):
        c = c[1:] if len(c) == 7 else "".join(ch * 2 for ch in c[1:4])
        return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))
    return tuple(int(float(x)) for x in c[c.index("(") + 1 : c.index(")")].split(",")[:3])


def colour_clashes(figures: list[dict], near: float = 40.0) -> list[str]:
    """What contradicts "one colour, one meaning" on a rendered page: a trace drawn in a colour
    it does not account for (plotly's cycle), one thing in two colours anywhere on the page, two
    things in one colour anywhere on it, or two things of one figure in colours closer than
    `near` (RGB distance: #565656 beside #555555 reads as the same grey)."""
    problems, colour_of, meaning_of = [], {}, {}
    for f in figures:
        seen = {}
        for t in f["colours"]:
            where = f"{f['id']}: {t['name']!r}"
            if not t["colour"] or not t["of"]:
                problems.append(f"{where} has no colour of its own ({t['colour']}, {t['of']})")
                continue
            colour = t["colour"].lower()
            colour_of.setdefault(t["of"], {})[colour] = where
            meaning_of.setdefault(colour, {})[t["of"]] = where
            seen[t["of"]] = colour
        for (a, ca), (b, cb) in itertools.combinations(sorted(seen.items()), 2):
            if ca != cb and math.dist(_rgb(ca), _rgb(cb)) < near:
                problems.append(f"{f['id']}: {a} ({ca}) and {b} ({cb}) look alike")
    problems += [f"{of} is drawn in {sorted(c)}" for of, c in colour_of.items() if len(c) > 1]
    problems += [f"{c} stands for {sorted(m)}" for c, m in meaning_of.items() if len(m) > 1]
    return problems


def test_a_page_of_every_committed_record_has_no_colour_clash(tmp_path):
    """Every committed record on one page (GPU and CPU runs, every implementation measured so far,
    paper figures included): each implementation has one colour and no colour two meanings."""
    paths = sorted((ROOT / "results").glob("*/*.jsonl"))
    result = render(build(paths, tmp_path / "everything.html", plotly_js="shared"))
    assert result["errors"] == []
    impls = {t["of"] for f in result["figures"] for t in f["colours"]}
    assert len([i for i in impls if i and i.startswith("impl:")]) >= 8  # a page worth checking
    assert colour_clashes(result["figures"]) == []
    # ... and the check fails on a clash: the same colour for two implementations
    clash = [{"id": "f", "colours": [
        {"name": "a", "colour": "#123456", "of": "impl:a"},
        {"name": "b", "colour": "#123456", "of": "impl:b"},
        {"name": "c", "colour": "#654321", "of": "impl:a"},
        {"name": "d", "colour": "#abcdef", "of": None},
        {"name": "e", "colour": "rgb(101, 67, 34)", "of": "impl:e"},
    ]}]  # fmt: skip
    problems = colour_clashes(clash)
    assert problems[0].startswith("f: 'd' has no colour of its own"), problems
    assert "impl:a (#654321) and impl:e (rgb(101, 67, 34)) look alike" in problems[1], problems
    assert "impl:a is drawn in" in problems[2] and "stands for" in problems[3], problems
    assert len(problems) == 4, problems


def test_report_of_a_real_run_renders_every_figure(run_dir):
    page = build([run_dir / "tiny.jsonl"], run_dir / "tiny-all.html")
    result = render(page)
    assert result["errors"] == []
    figs = {f["id"]: f for f in result["figures"]}
    assert set(figs) == {
        "fig-train",
        "fig-decode",
        "fig-throughput",
        "fig-kernels",
        "fig-memory",
        "fig-peers",
    }
    for fid in ("fig-train", "fig-decode", "fig-throughput", "fig-memory", "fig-peers"):
        assert figs[fid]["traces"] > 0 and figs[fid]["drawn"] >= figs[fid]["traces"], fid
    assert figs["fig-kernels"]["noData"]  # no kernel records: the figure says so
    drawn = [n for f in result["figures"] for n in f["names"]]
    assert not any("fake-wrong" in n or "fake-raising" in n for n in drawn)  # failed: never drawn
    assert (
        result["rows"] == len(read_records(run_dir / "tiny.jsonl")[0]) - 1
    )  # the ceiling is not a row
    assert result["statuses"] == 1  # ... but listed in the table


def test_run_command_writes_the_report(run_dir):
    from bench.timing import CpuTimer

    text = (run_dir / "tiny.html").read_text()
    assert "plotly" in text and "fig-decode" in text and "tiny.jsonl" in text
    assert "<th>timer</th>" in text and f'"timer": "{CpuTimer.kind}"' in text  # how each was timed
    # the CPU's ceilings with their magnitude: a matmul rate of GFLOP/s, never "0 TFLOP/s"
    assert re.search(r"copy [0-9.]+ [GM]B/s, matmul [0-9.]+ GFLOP/s \(float32\)", text)
    assert report_page.rate(0.052e12, "FLOP/s") == "52 GFLOP/s"
    assert report_page.rate(4222e9, "B/s") == "4.22 TB/s"
    assert report_page.rate(None, "B/s") == report_page.rate(0.0, "B/s") == "?"


@pytest.mark.parametrize("page", sorted((ROOT / "reports").glob("*.html")), ids=lambda p: p.name)
def test_committed_gpu_reports_render(page):
    result = render(page)
    assert result["errors"] == []
    assert all(f["noData"] or f["drawn"] > 0 for f in result["figures"])
    assert any(not f["noData"] for f in result["figures"])


def test_shared_plotly_js_pages_render_and_share_one_script(run_dir, tmp_path):
    """`--plotly-js shared` (what `report --all` writes into reports/): plotly.js once beside the
    pages, each page only its data, and the pages still draw every figure offline."""
    out = tmp_path / "shared"
    for name in ("a", "b"):
        args = ["report", str(run_dir / "tiny.jsonl"), "-o", str(out / f"{name}.html")]
        assert cli([*args, "--plotly-js", "shared"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    inline = (run_dir / "tiny.html").stat().st_size
    assert (out / "a.html").stat().st_size < inline / 10
    assert '<script src="plotly.min.js">' in (out / "a.html").read_text()
    result = render(out / "b.html")
    assert result["errors"] == []
    assert sum(f["drawn"] > 0 for f in result["figures"]) == 5
    with pytest.raises(ValueError, match="valid values are inline, shared"):
        build([run_dir / "tiny.jsonl"], out / "c.html", plotly_js="cdn")


def test_damaged_records_give_messages_not_tracebacks(run_dir, tmp_path):
    lines = (run_dir / "tiny.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    damaged = [
        *lines[:4],
        json.dumps({**record, "schema": 7, "key": "future"}),
        json.dumps({k: v for k, v in record.items() if k not in ("status", "impl")}),
        json.dumps({**record, "key": "odd", "timing": "fast", "params": [1, 2]}),
        json.dumps({**record, "key": "noseq", "workload": "train_step", "params": {"batch": 2}}),
        '{"schema": 1, "run_id": "torn',
    ]
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(damaged))
    html = build([path], tmp_path / "damaged.html")
    text = html.read_text()
    for message in ("schema version 7", "lacks fields", "malformed", "torn write"):
        assert message in text, message
    assert "Incomplete" in text  # the train record without seq_len is left out, and said so
    result = render(html)
    assert result["errors"] == []


def test_report_of_10000_records(run_dir, tmp_path):
    records, _ = read_records(run_dir / "tiny.jsonl")
    points = [r for r in records if r["workload"] != "ceiling" and r["status"] == "ok"]
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps(records[0]) + "\n")
        for i in range(10_000):
            r = dict(points[i % len(points)])
            r["key"] = f"{r['key']}#{i}"
            f.write(json.dumps(r) + "\n")
    html = build([path], tmp_path / "big.html")
    assert html.stat().st_size < 30e6
    result = render(html)
    assert result["errors"] == [] and result["rows"] == 10_000


def test_report_cli_errors(tmp_path, capsys):
    assert cli(["report", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "x.html")]) == 2
    assert "no such results file" in capsys.readouterr().err


def test_kernel_figure_draws_every_implementation_and_the_ceiling(run_dir, tmp_path):
    """Kernel records (workload kernel_<op>, params seq_len and backward) make the kernel figure."""
    records, _ = read_records(run_dir / "tiny.jsonl")
    ceiling = records[0]
    template = next(r for r in records if r["status"] == "ok" and r["workload"] == "prefill")
    lines = [json.dumps(ceiling)]
    for impl in ("ours-triton", "peer-scan"):
        for backward in (0, 1):
            for t in (1024, 4096, 16384):
                r = copy.deepcopy(template)
                r.update(
                    workload="kernel_scan",
                    impl=impl,
                    key=f"k|{impl}|{backward}|{t}",
                    params={"batch": 8, "seq_len": t, "width": 2560, "backward": backward},
                )
                r["metrics"] = {"gbps": 1000.0 + t / 10, "mbu": 0.4, "tokens_per_s": 1.0}
                lines.append(json.dumps(r))
    path = tmp_path / "kernels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = render(build([path], tmp_path / "kernels.html"))
    assert result["errors"] == []
    fig = next(f for f in result["figures"] if f["id"] == "fig-kernels")
    assert fig["traces"] == 4 and fig["drawn"] == 4  # two implementations x (fwd, fwd+bwd) panels
    assert set(fig["names"]) == {"ours-triton", "peer-scan"}
    assert "copy " in (tmp_path / "kernels.html").read_text()
