"""The report's figures, each drawn from the records it finds (status "ok" only).

A figure with no data returns a note saying what it needs instead of vanishing; a figure whose
records lack a field says how many it had to leave out (marked incomplete).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bench.report import paper
from bench.report.data import ok
from bench.report.paper import FAMILY_ORDER

# Enough colours for every implementation of the catalog and a few more (Dark24 then Alphabet).
PALETTE = (*plotly.colors.qualitative.Dark24, *plotly.colors.qualitative.Alphabet)
# The paper figures colour model families, not implementations (one implementation at a time).
FAMILY_COLORS = {"mqa": "#555555", "griffin": "#d62728", "hawk": "#1f77b4"}
SIZE_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
ANALYTIC_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot")
# The implementation a paper figure opens on, in order of preference; the menu offers the others.
PAPER_DEFAULT = ("ours-torch-optimized", "ours-jax-optimized")


def impl_colors(impls) -> dict[str, str]:
    """One colour per implementation for a whole page: the catalog's order first, then names the
    catalog does not know in the order given."""
    from bench.catalog import IMPLEMENTATIONS

    names = list(dict.fromkeys([*(i.name for i in IMPLEMENTATIONS), *impls]))
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _colors(df: pd.DataFrame, colors: dict | None) -> dict[str, str]:
    return colors if colors is not None else impl_colors(df["impl"].dropna().unique())


def family_color(family: str) -> str:
    return FAMILY_COLORS.get(family, "#8c564b")


# What a trace's colour stands for, carried in its `meta` so that the built page can be checked:
# on one page a colour means one thing (an implementation, or a model family in the paper
# figures) and each thing has one colour (tests/test_report.py reads it back from the browser).
ANALYTIC_COLOR = "#444444"  # analytic curves: neutral, told apart by dash and by legend


def colour_of(what: str, name: str) -> dict:
    """The `meta` of a trace coloured for `what` ("impl", "family" or "analytic") `name`."""
    return {"colour_of": f"{what}:{name}"}


@dataclass
class Figure:
    id: str
    title: str
    fig: go.Figure | None
    note: str = ""
    incomplete: bool = False
    claim: str = ""  # a paper figure: the paper's claim, with the verdicts drawn from the records
    verdicts: pd.DataFrame | None = None


def _line(x, y, name, **kw) -> go.Scatter:
    return go.Scatter(x=list(x), y=list(y), name=name, **{"mode": "lines+markers", **kw})


def growth(x, y) -> float | None:
    """The exponent k of y ∝ x^k fitted to a line's points (least squares in log-log), or None
    with fewer than three distinct positive x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < 3:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _growth_label(x, y, var: str) -> dict:
    """Trace arguments that print the fitted exponent beside the line's last point."""
    k = growth(x, y)
    if k is None:
        return {}
    n = len(list(x))
    return dict(
        mode="lines+markers+text",
        text=[""] * (n - 1) + [f"∝{var}^{k:.2f}"],
        textposition="middle right",
        textfont=dict(size=10),
    )


def _log_ticks(values) -> list[float]:
    """1-2-5 ticks spanning `values` (positive), one step beyond each end."""
    v = [float(x) for x in values if x is not None and x == x and x > 0]
    if not v:
        return []
    lo, hi = math.floor(math.log10(min(v))), math.ceil(math.log10(max(v)))
    ticks = [m * 10.0**e for e in range(lo, hi + 1) for m in (1, 2, 5)]
    below = [t for t in ticks if t <= min(v)][-1:]
    above = [t for t in ticks if t >= max(v)][:1]
    return list(dict.fromkeys(below + [t for t in ticks if min(v) < t < max(v)] + above))


def _layout(fig: go.Figure, height: int = 420) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=60, r=20, t=60, b=50), template="plotly_white")
    # A log axis over a decade or two labels its 2s and 5s as bare digits ("2", "5"): such an
    # axis gets 1-2-5 ticks labelled in full; a wider one keeps plotly's ticks, as numbers.
    values: dict[str, list] = {}
    for t in fig.data:
        for axis, data in (("xaxis", t.x), ("yaxis", t.y)):
            name = axis + (getattr(t, axis[0] + "axis") or axis[0]).removeprefix(axis[0])
            values.setdefault(name, []).extend(data or ())
    for name, data in values.items():
        axis = fig.layout[name]
        if axis.type != "log" or axis.tickvals is not None:
            continue
        ticks = _log_ticks(data)
        if 0 < len(ticks) <= 9:
            axis.update(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
        else:
            axis.tickformat = "~g"
    return fig


def _no_data(fid: str, title: str, needs: str, claim: paper.Claim | None = None) -> Figure:
    f = Figure(fid, title, None, f"No records for this figure: it needs {needs}.")
    if claim is not None:
        f.claim = f"Paper ({claim.title}): {claim.sentence}"
    return f


def _drop_missing(df: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, int]:
    kept = df.dropna(subset=cols)
    return kept, len(df) - len(kept)


def _paper_points(df: pd.DataFrame, claim: paper.Claim) -> pd.DataFrame:
    """The ok records a paper figure draws: one per key, with family and size."""
    d = paper.paper_records(df, claim)
    return d[(d["status"] == "ok") & d[claim.value].notna()]


def _order(impls) -> list[str]:
    from bench.catalog import IMPLEMENTATIONS

    names = list(dict.fromkeys(i.name for i in IMPLEMENTATIONS))
    return sorted(dict.fromkeys(impls), key=lambda i: names.index(i) if i in names else len(names))


def _families(d: pd.DataFrame) -> list[str]:
    return sorted(
        dict.fromkeys(d["family"]),
        key=lambda f: (f not in FAMILY_ORDER, FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 0, f),
    )


def _impl_menu(fig: go.Figure, trace_impls: list[str]) -> str:
    """One implementation at a time: the traces of the preferred one shown, a menu for the
    others. Returns the note's sentence saying which is shown."""
    if not trace_impls:
        return "No implementation has the records this figure needs."
    impls = _order(trace_impls)
    default = next((i for i in PAPER_DEFAULT if i in impls), impls[0])
    for trace, impl in zip(fig.data, trace_impls, strict=True):
        trace.visible = impl == default
    if len(impls) == 1:
        return f"Implementation: {default}."
    buttons = [
        dict(label=impl, method="update", args=[{"visible": [t == impl for t in trace_impls]}])
        for impl in impls
    ]
    fig.update_layout(
        updatemenus=[
            dict(
                buttons=buttons,
                active=impls.index(default),
                x=0,
                xanchor="left",
                y=1.18,
                yanchor="bottom",
            )
        ]
    )
    others = ", ".join(i for i in impls if i != default)
    return f"Shown: {default}; the menu above the figure picks another ({others})."


def _paper_figure(
    fid: str, title: str, df: pd.DataFrame, claim: paper.Claim, fig, note, incomplete=False
) -> Figure:
    f = _no_data(fid, title, "", claim)
    f.fig, f.note, f.incomplete = fig, note, incomplete
    f.verdicts = paper.verdicts(df, claim.figure)
    return f


def _ticks(values) -> dict:
    """A log axis labelled at the values measured (no minor-tick digits)."""
    vals = sorted({int(v) for v in values})
    return dict(type="log", tickvals=vals, ticktext=[str(v) for v in vals])


def train_vs_length(df: pd.DataFrame, colors: dict | None = None) -> Figure:
    """Paper Fig. 3: training step time vs sequence length at a fixed number of tokens per batch,
    relative to MQA at the shortest length of the same size and implementation; a panel per size,
    a line per family, one implementation at a time."""
    fid, title = (
        "fig-train",
        "Fig. 3: training step time vs sequence length, relative to MQA at the shortest length",
    )
    claim = paper.BY_FIGURE[fid]
    d = ok(df, "train_step")
    if d.empty:
        return _no_data(fid, title, "train_step records (e.g. suite paper-fig3)", claim)
    d, missing = _drop_missing(d, ["seq_len"])
    fixed_batch = int(d["tokens_per_batch"].isna().sum())
    d = _paper_points(df, claim)
    if d.empty:
        return _no_data(
            fid, title, "train_step records at a fixed tokens_per_batch (paper-fig3)", claim
        )
    sizes = list(dict.fromkeys(d["size"]))
    fig = make_subplots(
        rows=1, cols=len(sizes), subplot_titles=[f"size {s}" for s in sizes], shared_yaxes=True
    )
    trace_impls, notes = [], []
    for col, size in enumerate(sizes, start=1):
        ds = d[d["size"] == size]
        for impl in _order(ds["impl"]):
            di = ds[ds["impl"] == impl]
            mqa = di[di["family"] == "mqa"]
            first = di["seq_len"].min()
            base = mqa[mqa["seq_len"] == first]
            if base.empty:
                notes.append(f"{impl} {size}: no MQA record at {int(first)} tokens, not drawn")
                continue
            ref = float(base["median_ms"].iloc[-1])
            for family in _families(di):
                g = di[di["family"] == family].sort_values("seq_len")
                fig.add_trace(
                    _line(
                        g["seq_len"],
                        g["median_ms"] / ref,
                        f"{family} {size}",
                        **_growth_label(g["seq_len"], g["median_ms"], "T"),
                        legendgroup=f"{family}{size}",
                        line=dict(color=family_color(family)),
                        meta=colour_of("family", family),
                        customdata=g["median_ms"],
                        hovertemplate=f"%{{x}} tokens: %{{y:.3f}}x MQA at {int(first)} "
                        f"(%{{customdata:.4g}} ms)<extra>{family}-{size} {impl}</extra>",
                    ),
                    row=1,
                    col=col,
                )
                trace_impls.append(impl)
        fig.update_xaxes(title_text="sequence length", **_ticks(ds["seq_len"]), row=1, col=col)
    fig.update_yaxes(title_text="step time / MQA's at the shortest length", row=1, col=1)
    note = (
        "Fixed tokens per batch: the batch shrinks as the length grows. Beside each line's last "
        "point: k of step time ∝ T^k fitted to its points (0: the cost does not grow with the "
        "length). "
        + _impl_menu(fig, trace_impls)
        + " An implementation measured only at some lengths appears only there. "
        + "; ".join(notes)
    )
    if fixed_batch:
        note += (
            f" {fixed_batch} train_step records at a fixed batch (no tokens_per_batch) are not in "
            "this figure."
        )
    if missing:
        note += f" {missing} records without seq_len were left out."
    return _paper_figure(fid, title, df, claim, _layout(fig), note, bool(missing))


def decode_ms_analytic(d: pd.DataFrame) -> pd.Series:
    """The paper's decode model: every step reads the weights and the cache once, at the copy
    bandwidth measured in the same run: work.bytes (weights + cache, summed over the steps) /
    copy bandwidth, in ms."""
    return d["work_bytes"] / (d["copy_gbps"] * 1e9) * 1e3


def decode_latency(df: pd.DataFrame, colors: dict | None = None) -> Figure:
    """Paper Fig. 4: time to sample N tokens after a prefill, a panel per prefill length, a line
    per family with the analytic decode time (weights + cache read at every step) beside it."""
    fid, title = (
        "fig-decode",
        "Fig. 4: decode latency vs tokens sampled, per prefill length, with the bytes-read model",
    )
    claim = paper.BY_FIGURE[fid]
    d = ok(df, "decode")
    if d.empty:
        return _no_data(fid, title, "decode records (e.g. suite paper-fig4)", claim)
    d, missing = _drop_missing(d, ["steps", "prompt", "batch"])
    d = _paper_points(df, claim).dropna(subset=["prompt", "batch"])
    if d.empty:
        return _no_data(fid, title, "decode records with steps, prompt and batch", claim)
    batch = 16 if (d["batch"] == 16).any() else int(d["batch"].max())
    d = d[d["batch"] == batch]
    prompts = sorted(d["prompt"].unique())
    fig = make_subplots(
        rows=1,
        cols=len(prompts),
        subplot_titles=["no prefill (1 token)" if p == 1 else f"prefill {int(p)}" for p in prompts],
    )
    sizes = list(dict.fromkeys(d["size"]))
    trace_impls, legend = [], set()
    for col, prompt in enumerate(prompts, start=1):
        dp = d[d["prompt"] == prompt]
        for impl in _order(dp["impl"]):
            di = dp[dp["impl"] == impl]
            for size in sizes:
                for family in _families(di[di["size"] == size]):
                    g = di[(di["size"] == size) & (di["family"] == family)].sort_values("steps")
                    name = f"{family} {size}"
                    color = family_color(family)
                    fig.add_trace(
                        _line(
                            g["steps"],
                            g["median_ms"],
                            name,
                            **_growth_label(g["steps"], g["median_ms"], "N"),
                            legendgroup=name,
                            showlegend=(impl, name) not in legend,
                            line=dict(color=color),
                            meta=colour_of("family", family),
                            marker=dict(symbol=SIZE_SYMBOLS[sizes.index(size) % 5]),
                            error_y=dict(
                                type="data",
                                symmetric=False,
                                array=list(g["p80_ms"] - g["median_ms"]),
                                arrayminus=list(g["median_ms"] - g["p20_ms"]),
                            ),
                            hovertemplate="%{x} tokens: %{y:.4g} ms<extra>"
                            + f"{family}-{size} {impl}</extra>",
                        ),
                        row=1,
                        col=col,
                    )
                    a = g.dropna(subset=["work_bytes", "copy_gbps"])
                    fig.add_trace(
                        go.Scatter(
                            x=list(a["steps"]),
                            y=list(decode_ms_analytic(a)),
                            name=f"{name} bytes / copy bandwidth",
                            mode="lines+markers",  # a lone point still shows
                            marker=dict(symbol="circle-open", size=6),
                            legendgroup=name + "model",
                            showlegend=(impl, name + "model") not in legend,
                            line=dict(color=color, dash="dash", width=1.5),
                            meta=colour_of("family", family),  # its measured twin's colour
                            hovertemplate="%{x} tokens: %{y:.4g} ms (weights + cache read every "
                            f"step at the measured copy bandwidth)<extra>{family}-{size}</extra>",
                        ),
                        row=1,
                        col=col,
                    )
                    trace_impls += [impl, impl]
                    legend |= {(impl, name), (impl, name + "model")}
        fig.update_xaxes(title_text="tokens sampled", **_ticks(dp["steps"]), row=1, col=col)
    fig.update_yaxes(title_text="latency (ms)", row=1, col=1)
    note = (
        f"Batch {batch}; median with p20-p80 bars; beside each measured line's last point, k of "
        f"latency ∝ N^k fitted to its points (1: a constant cost per step). "
        f"{_impl_menu(fig, trace_impls)} "
        "Dashed: the paper's decode model, the weights and the cache read once per step at the "
        "copy bandwidth measured in the same run (work.bytes / copy GB/s). A prefill of 1 stands "
        "for the paper's empty prompt."
    )
    if missing:
        note += f" {missing} records without steps/prompt/batch were left out."
    return _paper_figure(fid, title, df, claim, _layout(fig), note, bool(missing))


def max_throughput(df: pd.DataFrame, colors: dict | None = None) -> Figure:
    """Paper Fig. 1b: tokens/s at the largest batch that fits, vs generated length, a line per
    family; the hover gives the batch found and what limited it."""
    fid, title = "fig-throughput", "Fig. 1b: maximum throughput vs generated length"
    claim = paper.BY_FIGURE[fid]
    d = ok(df, "throughput")
    if d.empty:
        return _no_data(fid, title, "throughput records (e.g. suite paper-fig1b)", claim)
    d, missing = _drop_missing(d, ["gen_len", "tokens_per_s"])
    d = _paper_points(df, claim)
    if d.empty:
        return _no_data(fid, title, "throughput records with gen_len and tokens/s", claim)
    sizes = list(dict.fromkeys(d["size"]))
    fig = go.Figure()
    trace_impls = []
    for impl in _order(d["impl"]):
        di = d[d["impl"] == impl]
        for size in sizes:
            for family in _families(di[di["size"] == size]):
                g = di[(di["size"] == size) & (di["family"] == family)].sort_values("gen_len")
                batches = [f"{int(b)}" if pd.notna(b) else "?" for b in g["found_batch"]]
                limits = [str(x) if isinstance(x, str) else "?" for x in g["limited_by"]]
                fig.add_trace(
                    _line(
                        g["gen_len"],
                        g["tokens_per_s"],
                        f"{family} {size}",
                        legendgroup=f"{family}{size}",
                        line=dict(color=family_color(family)),
                        meta=colour_of("family", family),
                        marker=dict(symbol=SIZE_SYMBOLS[sizes.index(size) % 5]),
                        customdata=list(zip(batches, limits, strict=True)),
                        hovertemplate="%{x} tokens: %{y:.4g} tok/s at batch %{customdata[0]} "
                        "(limited by %{customdata[1]})<extra>" + f"{family}-{size} {impl}</extra>",
                        text=[f"b={b}" for b in batches],
                        textposition="top center",
                    )
                )
                fig.data[-1].mode = "lines+markers+text"
                trace_impls.append(impl)
    fig.update_xaxes(title_text="tokens generated", **_ticks(d["gen_len"]))
    fig.update_yaxes(title_text="tokens / s")
    note = (
        f"{_impl_menu(fig, trace_impls)} Each point is labelled with the batch the "
        "search found; the hover says what limited it (memory, or the suite's max_batch)."
    )
    if missing:
        note += f" {missing} records were left out (missing fields)."
    return _paper_figure(fid, title, df, claim, _layout(fig), note, bool(missing))


def kernels(df: pd.DataFrame, colors: dict | None = None) -> Figure:
    """GB/s vs sequence length of every kernel implementation, forward and forward+backward, with
    the copy bandwidth measured in the same run drawn as the ceiling.

    Kernel records: workload "kernel_<op>", params seq_len and backward (0: forward, 1: forward +
    backward), metrics gbps / mbu."""
    fid, title = (
        "fig-kernels",
        "Kernels: bandwidth vs sequence length, against the measured copy ceiling",
    )
    d = ok(df)
    d = d[d["workload"].astype(str).str.startswith("kernel")]
    if d.empty:
        return _no_data(fid, title, "kernel workload records (the kernels suite)")
    colors = _colors(df, colors)
    d, missing = _drop_missing(d, ["seq_len", "gbps"])
    d = d.assign(direction=d["backward"].map(lambda b: "forward+backward" if b == 1 else "forward"))
    panels = list(dict.fromkeys(zip(d["workload"], d["direction"], strict=True)))
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        subplot_titles=[f"{w.removeprefix('kernel_')} {dr}" for w, dr in panels],
        shared_yaxes=True,
    )
    for col, (wl, direction) in enumerate(panels, start=1):
        dw = d[(d["workload"] == wl) & (d["direction"] == direction)]
        for impl, g in dw.groupby("impl", sort=False):
            g = g.sort_values("seq_len")
            k = growth(g["seq_len"], g["median_ms"])
            fit = "" if k is None else f", time ∝ T^{k:.2f} over the line"
            fig.add_trace(
                _line(
                    g["seq_len"],
                    g["gbps"],
                    impl,
                    legendgroup=impl,
                    showlegend=impl not in {t.name for t in fig.data},
                    line=dict(color=colors[impl]),
                    meta=colour_of("impl", impl),
                    customdata=g["mbu"] * 100,
                    hovertemplate="%{x}: %{y:.4g} GB/s (%{customdata:.0f}% of copy"
                    + fit
                    + ")<extra>"
                    + impl
                    + "</extra>",
                ),
                row=1,
                col=col,
            )
        ceiling = dw["copy_gbps"].dropna()
        if len(ceiling):
            fig.add_hline(
                y=float(ceiling.median()),
                line_dash="dash",
                line_color="#444",
                annotation_text=f"copy {ceiling.median():.0f} GB/s",
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="sequence length", type="log", row=1, col=col)
    fig.update_yaxes(title_text="GB/s (hover: % of the copy ceiling)", row=1, col=1)
    note = "Dashed: the device copy bandwidth (read + write) measured at the start of the same run."
    if missing:
        note += f" {missing} records were left out (missing fields)."
    return Figure(fid, title, _layout(fig), note, bool(missing))


def memory(df: pd.DataFrame, colors: dict | None = None) -> Figure:
    """Measured decode-state memory per sequence vs context length, against the analytic size."""
    fid, title = (
        "fig-memory",
        "Decode state memory vs context length: measured and analytic (App. F.4)",
    )
    d = ok(df)
    d = d.dropna(subset=["cache_bytes", "cache_length"])
    if d.empty:
        return _no_data(fid, title, "prefill/decode/throughput records with cache sizes")
    colors = _colors(df, colors)
    batch = d["batch"].fillna(d["found_batch"]).fillna(1)
    d = d.assign(
        per_seq=d["cache_bytes"] / batch / 2**20, analytic=d["cache_bytes_analytic"] / batch / 2**20
    )
    fig = go.Figure()
    models = list(dict.fromkeys(d["model"]))
    for (model, impl), g in d.groupby(["model", "impl"], sort=False):
        g = g.sort_values("cache_length").drop_duplicates("cache_length")
        symbol = SIZE_SYMBOLS[models.index(model) % len(SIZE_SYMBOLS)]
        fig.add_trace(
            go.Scatter(
                x=list(g["cache_length"]),
                y=list(g["per_seq"]),
                mode="markers",
                # colour: the implementation (as everywhere on the page); symbol: the model
                marker=dict(color=colors[impl], symbol=symbol, size=9),
                meta=colour_of("impl", impl),
                name=f"{model} · {impl} (measured)",
                legendgroup=model,
                hovertemplate="%{x} tokens: %{y:.4g} MiB<extra>" + f"{model} {impl}</extra>",
            )
        )
    for model, g in d.groupby("model", sort=False):
        g = g.sort_values("cache_length").drop_duplicates("cache_length")
        dash = ANALYTIC_DASHES[models.index(model) % len(ANALYTIC_DASHES)]
        fig.add_trace(
            go.Scatter(
                x=list(g["cache_length"]),
                y=list(g["analytic"]),
                mode="lines+markers",
                # neutral: colour is the implementation's on this page; the model is the dash
                # and the marker, the same symbol as its measured points
                line=dict(dash=dash, color=ANALYTIC_COLOR, width=1.5),
                marker=dict(
                    symbol=SIZE_SYMBOLS[models.index(model) % len(SIZE_SYMBOLS)] + "-open",
                    size=7,
                    color=ANALYTIC_COLOR,
                ),
                meta=colour_of("analytic", "analytic"),
                name=f"{model} (analytic)",
                legendgroup=model,
            )
        )
    fig.update_xaxes(title_text="context length (tokens)", type="log")
    fig.update_yaxes(title_text="MiB per sequence", type="log")
    note = (
        "Measured: bytes held by each implementation's cache object. Analytic: RG-LRU state "
        "(float32) + conv window + keys/values of the attention window (or of every token, global)."
    )
    return Figure(fid, title, _layout(fig), note)


def peers(df: pd.DataFrame, colors: dict | None = None) -> Figure:
    """End-to-end comparison: median time of every implementation per case, with MFU / MBU."""
    fid, title = "fig-peers", "End-to-end peer comparison (prefill, decode, training step)"
    d = ok(df)
    d = d[d["workload"].isin(["prefill", "decode", "train_step"])]
    if d.empty:
        return _no_data(fid, title, "prefill, decode or train_step records")
    colors = _colors(df, colors)
    workloads = [w for w in ("prefill", "decode", "train_step") if (d["workload"] == w).any()]
    fig = make_subplots(
        rows=len(workloads), cols=1, subplot_titles=workloads, vertical_spacing=0.12
    )
    shown = set()
    for row, wl in enumerate(workloads, start=1):
        dw = d[d["workload"] == wl].assign(
            case=lambda x: x["model"] + "<br>" + x["params"] + " " + x["dtype"]
        )
        for impl, g in dw.groupby("impl", sort=False):
            rates = [
                ", ".join(
                    s
                    for s in (
                        f"MFU {m:.0%}" if pd.notna(m) else "",
                        f"MBU {b:.0%}" if pd.notna(b) else "",
                    )
                    if s
                )
                for m, b in zip(g["mfu"], g["mbu"], strict=True)
            ]
            fig.add_trace(
                go.Bar(
                    x=list(g["case"]),
                    y=list(g["median_ms"]),
                    name=impl,
                    marker_color=colors[impl],
                    meta=colour_of("impl", impl),
                    legendgroup=impl,
                    showlegend=impl not in shown,
                    customdata=rates,  # on hover only: printed on grouped bars they overlap
                    hovertemplate="%{y:.4g} ms %{customdata}<extra>" + impl + "</extra>",
                ),
                row=row,
                col=1,
            )
            shown.add(impl)
        fig.update_yaxes(title_text="median ms", type="log", row=row, col=1)
    fig.update_layout(barmode="group")
    note = (
        "Log scale. Hover over a bar for its MFU and MBU, against the matmul rate and copy "
        "bandwidth measured in the same run (the records table lists them too)."
    )
    return Figure(fid, title, _layout(fig, 320 * len(workloads) + 80), note)


PAPER = (train_vs_length, decode_latency, max_throughput)
ALL = (*PAPER, kernels, memory, peers)
