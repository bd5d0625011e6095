"""The report's paper figures (Figs. 3, 4, 1b) and their verdicts, on small synthetic records:
each claim holds, fails with its number, or is not measured, and the page says so under the
figure; the decode figure's dashed line is work.bytes over the copy bandwidth of the same run."""

import html
import json

import pytest

from bench.report import build, data, figures, paper
from bench.results import SCHEMA_VERSION

COPY_GBPS = 50.0


def record(workload, model, impl, params, status="ok", ms=None, tok_s=None, run="r1", **extra):
    """One point record with the fields the report reads."""
    key = "|".join(
        (workload, model, "float32", ",".join(f"{k}={v}" for k, v in params.items()), impl)
    )
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run,
        "suite": {"train_step": "paper-fig3", "decode": "paper-fig4"}.get(workload, "paper-fig1b"),
        "key": key,
        "workload": workload,
        "model": model,
        "impl": impl,
        "role": "optimized",
        "backend": "torch",
        "dtype": "float32",
        "params": params,
        "status": status,
        "error": None if status == "ok" else f"{status} at this point",
        "timing": None
        if ms is None
        else {"median_ms": ms, "p20_ms": ms * 0.95, "p80_ms": ms * 1.05},
        "work": {"bytes": extra.pop("bytes", 1e9), "tokens": 1},
        "metrics": None if tok_s is None else {"tokens_per_s": tok_s},
        "extra": extra or None,
        "ceilings": {"copy_gbps": COPY_GBPS},
        "env": {"device": "cpu"},
    }


IMPL = "ours-torch-optimized"


def train(model, seq_len, ms, impl=IMPL, **kw):
    p = {"batch": 16384 // seq_len, "seq_len": seq_len, "tokens_per_batch": 16384}
    return record("train_step", model, impl, p, ms=ms, **kw)


def decode(model, prompt, steps, ms, impl=IMPL, **kw):
    p = {"batch": 16, "prompt": prompt, "steps": steps}
    return record("decode", model, impl, p, ms=ms, bytes=2e9 * steps * (1 + prompt / 4096), **kw)


def throughput(model, gen_len, tok_s, batch=64, limited_by="memory", impl=IMPL, **kw):
    p = {"gen_len": gen_len, "max_batch": 512, "prompt": 1}
    return record(
        "throughput", model, impl, p, ms=1.0, tok_s=tok_s, batch=batch, limited_by=limited_by, **kw
    )


RECORDS = [
    # Fig. 3: Hawk 0.95x MQA at 8192 (holds), Griffin 1.14x (does not hold).
    train("mqa-1b", 2048, 100.0),
    train("mqa-1b", 8192, 200.0),
    train("hawk-1b", 2048, 101.0),
    train("hawk-1b", 8192, 190.0),
    train("griffin-1b", 2048, 103.0),
    train("griffin-1b", 8192, 228.0),
    # A reference implementation measured at 2048 only: its verdict is read there.
    train("mqa-1b", 2048, 1000.0, impl="ours-torch-reference"),
    train("hawk-1b", 2048, 900.0, impl="ours-torch-reference"),
    # Fig. 4: prompt 1: Hawk faster (holds), Griffin out of memory at the longest point;
    # prompt 4096: Hawk's record failed its gate, Griffin never ran.
    decode("mqa-1b", 1, 128, 300.0),
    decode("mqa-1b", 1, 4096, 9000.0),
    decode("hawk-1b", 1, 128, 200.0),
    decode("hawk-1b", 1, 4096, 6000.0),
    decode("griffin-1b", 1, 128, 250.0),
    decode("griffin-1b", 1, 4096, None, status="oom"),
    decode("mqa-1b", 4096, 4096, 12000.0),
    decode("hawk-1b", 4096, 4096, 5000.0, status="mismatch"),
    # Fig. 1b: Hawk 2x MQA (holds), Griffin 0.9x (does not hold).
    throughput("mqa-1b", 512, 1000.0),
    throughput("mqa-1b", 4096, 500.0, batch=32),
    throughput("hawk-1b", 512, 1500.0, batch=512, limited_by="max_batch"),
    throughput("hawk-1b", 4096, 1000.0, batch=256),
    throughput("griffin-1b", 512, 1100.0),
    throughput("griffin-1b", 4096, 450.0, batch=128),
]


@pytest.fixture
def paper_file(tmp_path):
    path = tmp_path / "paper.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def verdict(v, figure, family, impl=IMPL, **panel):
    rows = v[(v["figure"] == figure) & (v["family"] == family) & (v["impl"] == impl)]
    for k, val in panel.items():
        rows = rows[rows["panel"].str.contains(f"{k} {val}")]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_training_verdict_holds_or_fails_with_the_ratio_at_the_longest_length(paper_file):
    df, _, _ = data.load([paper_file])
    v = paper.verdicts(df)
    hawk = verdict(v, "fig-train", "hawk")
    assert hawk["verdict"] == "holds" and hawk["x"] == 8192
    assert hawk["ratio"] == pytest.approx(0.95)
    assert hawk["ratio_first"] == pytest.approx(1.01)
    assert hawk["text"] == (
        "Hawk 1b at seq_len 8192: 0.95× MQA's step time (at seq_len 2048: 1.01×); paper: ≤ 1×; "
        "holds (5% below MQA)"
    )
    griffin = verdict(v, "fig-train", "griffin")
    assert griffin["verdict"] == "does not hold"
    assert "1.14× MQA's step time" in griffin["text"] and "14% above MQA" in griffin["text"]
    # The reference is read where it was measured; it has no Griffin record.
    ref = verdict(v, "fig-train", "hawk", impl="ours-torch-reference")
    assert ref["x"] == 2048 and ref["verdict"] == "holds" and ref["ratio"] == pytest.approx(0.9)
    missing = verdict(v, "fig-train", "griffin", impl="ours-torch-reference")
    assert missing["verdict"] == "not measured" and "no Griffin record" in missing["text"]


def test_checkpointed_training_is_a_size_of_its_own(tmp_path):
    def ckpt(model, seq_len, ms):
        p = {
            "batch": 16384 // seq_len,
            "checkpoint": 1,
            "seq_len": seq_len,
            "tokens_per_batch": 16384,
        }
        return record("train_step", model, IMPL, p, ms=ms)

    extra = [ckpt("mqa-1b", 2048, 130.0), ckpt("mqa-1b", 8192, 260.0), ckpt("hawk-1b", 8192, 300.0)]
    path = tmp_path / "ckpt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*RECORDS, *extra]))
    df, _, _ = data.load([path])
    v = paper.verdicts(df, "fig-train")
    plain = v[(v["family"] == "hawk") & (v["impl"] == IMPL) & (v["size"] == "1b")]
    assert len(plain) == 1 and plain.iloc[0]["ratio"] == pytest.approx(0.95)  # not mixed
    (ck,) = v[(v["family"] == "hawk") & (v["size"] == "1b, checkpointed")].itertuples()
    assert ck.verdict == "does not hold" and ck.ratio == pytest.approx(300 / 260)
    fig = figures.train_vs_length(df)
    assert {"size 1b", "size 1b, checkpointed"} <= {a.text for a in fig.fig.layout.annotations}


def test_decode_verdict_not_measured_when_a_record_is_missing_failed_or_out_of_memory(
    paper_file,
):
    df, _, _ = data.load([paper_file])
    v = paper.verdicts(df, "fig-decode")
    assert set(v["figure"]) == {"fig-decode"}
    hawk = verdict(v, "fig-decode", "hawk", prompt=1)
    assert hawk["verdict"] == "holds" and hawk["x"] == 4096
    assert hawk["ratio"] == pytest.approx(6000 / 9000)
    assert "4096 steps after a prefill of 1: 0.67× MQA's latency" in hawk["text"]
    oom = verdict(v, "fig-decode", "griffin", prompt=1)
    assert oom["verdict"] == "not measured" and "griffin-1b oom" in oom["text"]
    mismatch = verdict(v, "fig-decode", "hawk", prompt=4096)
    assert mismatch["verdict"] == "not measured" and "hawk-1b mismatch" in mismatch["text"]
    assert mismatch["ratio"] is None or mismatch["ratio"] != mismatch["ratio"]  # None or NaN
    absent = verdict(v, "fig-decode", "griffin", prompt=4096)
    assert absent["verdict"] == "not measured" and "no Griffin record" in absent["text"]


def test_throughput_verdict_and_the_newest_record_of_a_key_wins(paper_file, tmp_path):
    df, _, _ = data.load([paper_file])
    v = paper.verdicts(df, "fig-throughput")
    assert verdict(v, "fig-throughput", "hawk")["ratio"] == pytest.approx(2.0)
    assert verdict(v, "fig-throughput", "hawk")["verdict"] == "holds"
    griffin = verdict(v, "fig-throughput", "griffin")
    assert griffin["verdict"] == "does not hold" and "10% below MQA" in griffin["text"]
    # A rerun of Griffin's longest point, read later, replaces the first one.
    rerun = tmp_path / "rerun.jsonl"
    rerun.write_text(json.dumps(throughput("griffin-1b", 4096, 800.0, run="r2")) + "\n")
    df, _, _ = data.load([paper_file, rerun])
    griffin = verdict(paper.verdicts(df, "fig-throughput"), "fig-throughput", "griffin")
    assert griffin["verdict"] == "holds" and griffin["ratio"] == pytest.approx(1.6)
    # ... and a failed rerun makes the point not measured rather than keeping the old number.
    rerun.write_text(json.dumps(throughput("griffin-1b", 4096, None, status="oom")) + "\n")
    df, _, _ = data.load([paper_file, rerun])
    griffin = verdict(paper.verdicts(df, "fig-throughput"), "fig-throughput", "griffin")
    assert griffin["verdict"] == "not measured"


def test_no_paper_records_no_verdict_rows(tmp_path):
    path = tmp_path / "none.jsonl"
    path.write_text(json.dumps(record("prefill", "mqa-1b", IMPL, {"prompt": 8}, ms=1.0)) + "\n")
    df, _, _ = data.load([path])
    assert paper.verdicts(df).empty


def test_decode_model_line_is_work_bytes_over_the_copy_bandwidth(paper_file):
    df, _, _ = data.load([paper_file])
    f = figures.decode_latency(df)
    models = [t for t in f.fig.data if t.name.endswith("bytes / copy bandwidth")]
    assert models and all(t.line.dash == "dash" for t in models)
    measured = {(t.name, t.xaxis): t for t in f.fig.data if t not in models}
    for t in models:
        twin = measured[(t.name.removesuffix(" bytes / copy bandwidth"), t.xaxis)]
        assert t.line.color == twin.line.color  # drawn beside its measured line
    hawk = next(t for t in models if t.name.startswith("hawk") and t.xaxis == "x")  # prompt 1
    assert list(hawk.x) == [128, 4096]
    expected = [2e9 * s * (1 + 1 / 4096) / (COPY_GBPS * 1e9) * 1e3 for s in (128, 4096)]
    assert list(hawk.y) == pytest.approx(expected)


def test_training_figure_is_relative_to_mqa_at_the_shortest_length_one_impl_at_a_time(
    paper_file,
):
    df, _, _ = data.load([paper_file])
    f = figures.train_vs_length(df)
    shown = [t for t in f.fig.data if t.visible]
    assert {t.name for t in shown} == {"mqa 1b", "hawk 1b", "griffin 1b"}
    hawk = next(t for t in shown if t.name == "hawk 1b")
    assert list(hawk.y) == pytest.approx([1.01, 1.90])
    assert "ours-torch-optimized" in hawk.hovertemplate
    menu = f.fig.layout.updatemenus[0]
    labels = [b.label for b in menu.buttons]
    assert labels == ["ours-torch-reference", "ours-torch-optimized"]  # catalog order
    assert labels[menu.active] == IMPL
    ref = menu.buttons[0].args[0]["visible"]
    assert sum(ref) == 2  # the reference's MQA and Hawk at 2048 only
    assert list(f.fig.layout.xaxis.tickvals) == [2048, 8192]  # no minor-tick digits


def test_page_has_the_paper_section_three_figures_and_their_verdicts(paper_file, tmp_path):
    from test_report import render

    page = build([paper_file], tmp_path / "paper.html")
    text = page.read_text()
    assert '<h2 id="paper">Paper figures</h2>' in text
    for claim in paper.CLAIMS:
        assert html.escape(claim.sentence) in text
    assert "Hawk 1b at seq_len 8192: 0.95× MQA&#x27;s step time" in text
    assert 'class="verdict-fails">Griffin 1b at seq_len 8192: 1.14×' in text
    assert 'class="verdict-missing">Griffin 1b at 4096 steps after a prefill of 1' in text
    assert "Hawk 1b at gen_len 4096: 2.00× MQA&#x27;s tokens/s" in text
    assert "measured on the CPU" in text  # the synthetic records say device cpu
    result = render(page)
    assert result["errors"] == []
    figs = {f["id"]: f for f in result["figures"]}
    for fid in ("fig-train", "fig-decode", "fig-throughput"):
        assert not figs[fid]["noData"] and figs[fid]["drawn"] > 0, fid


def test_a_page_without_paper_records_says_the_claims_are_not_measured(tmp_path):
    path = tmp_path / "none.jsonl"
    path.write_text(json.dumps(record("prefill", "mqa-1b", IMPL, {"prompt": 8}, ms=1.0)) + "\n")
    text = build([path], tmp_path / "none.html").read_text()
    assert text.count("not measured: no records") == 3
    assert "measured on the CPU" not in text  # no paper record at all, on any device
    assert html.escape(paper.CLAIMS[0].sentence) in text


def test_one_colour_per_implementation_across_the_page(paper_file, tmp_path):
    from bench.catalog import IMPLEMENTATIONS

    names = list(dict.fromkeys(i.name for i in IMPLEMENTATIONS))
    colors = figures.impl_colors(["peer-x", "peer-y"])
    assert len(set(colors.values())) == len(colors) == len(names) + 2  # no two share a colour
    assert list(colors)[: len(names)] == names
    # The same implementation has the same colour in the peer bars and the memory markers.
    lines = paper_file.read_text().splitlines()
    prefill = [
        record("prefill", "mqa-1b", impl, {"prompt": 8}, ms=1.0 + i)
        for i, impl in enumerate(("ours-jax-optimized", IMPL, "peer-x"))
    ]
    for r in prefill:
        r["memory"] = {"cache_bytes": 1000, "cache_bytes_analytic": 900, "cache_length": 8}
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([*lines, *(json.dumps(r) for r in prefill)]) + "\n")
    df, _, _ = data.load([path])
    page_colors = figures.impl_colors(df["impl"].unique())
    bars = figures.peers(df, page_colors).fig.data
    marks = [t for t in figures.memory(df, page_colors).fig.data if t.mode == "markers"]
    for impl in ("ours-jax-optimized", IMPL, "peer-x"):
        bar = next(t for t in bars if t.name == impl)
        mark = next(t for t in marks if impl in t.name)
        assert bar.marker.color == mark.marker.color == page_colors[impl]
    assert page_colors[IMPL] == figures.impl_colors([])[IMPL]  # fixed by the catalog, not the data


def test_log_axes_label_whole_numbers(paper_file):
    """No log axis is left to plotly's minor-tick labels (a bare "2" or "5" under 20 or 50)."""
    df, _, _ = data.load([paper_file])
    for make in figures.ALL:
        f = make(df)
        if f.fig is None:
            continue
        for axis in (*f.fig.select_xaxes(), *f.fig.select_yaxes()):
            if axis.type == "log":
                assert axis.tickvals is not None or axis.tickformat == "~g", (f.id, axis)
    assert figures._log_ticks([0.0007, 0.012]) == [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02]
    fig = figures._layout(
        figures.go.Figure(figures.go.Scatter(x=[1, 12], y=[0.0007, 0.012])).update_xaxes(type="log")
    )
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "5", "10", "20"]
    assert fig.layout.yaxis.tickvals is None  # a linear axis keeps its ticks


def test_the_fitted_growth_exponent_is_printed_beside_each_line(tmp_path):
    """k of time ∝ x^k, fitted in log-log: beside the last point of each Fig. 3 / Fig. 4 line,
    in the kernels' hover; none with fewer than three lengths."""
    assert figures.growth([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    assert figures.growth([2048, 4096, 8192], [5, 5, 5]) == pytest.approx(0.0, abs=1e-12)
    assert figures.growth([1, 2], [1, 4]) is None and figures.growth([1, 1, 1], [1, 2, 3]) is None
    recs = [train(f"{f}-400m", t, ms * t**k) for f, ms, k in (("mqa", 1.0, 0.5), ("hawk", 2.0, 0.0))
            for t in (2048, 4096, 8192)]  # fmt: skip
    path = tmp_path / "growth.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fig = figures.train_vs_length(data.load([path])[0])
    labels = {tr.name: [x for x in tr.text if x] for tr in fig.fig.data if tr.text}
    assert labels == {"mqa 400m": ["∝T^0.50"], "hawk 400m": ["∝T^0.00"]}
