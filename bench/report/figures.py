"""The report's figures, each drawn from the records it finds (status "ok" only).

A figure with no data returns a note saying what it needs instead of vanishing; a figure whose
records lack a field says how many it had to leave out (marked incomplete).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bench.report.data import ok

FAMILY_ORDER = ("mqa", "griffin", "hawk")
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")


def impl_color(impl: str) -> str:
    """The same colour for an implementation in every figure (catalog order)."""
    from bench.catalog import IMPLEMENTATIONS

    names = [i.name for i in IMPLEMENTATIONS]
    index = names.index(impl) if impl in names else len(names) + sum(map(ord, impl))
    return PALETTE[index % len(PALETTE)]


@dataclass
class Figure:
    id: str
    title: str
    fig: go.Figure | None
    note: str = ""
    incomplete: bool = False


def _family_size(model: str) -> tuple[str, str]:
    """("griffin", "1b") for griffin-1b; the family from the preset's blocks (gemma-2b is MQA)."""
    from models.config import PRESETS, preset

    name, _, size = model.partition("-")
    family = preset(model).family if model in PRESETS else name
    return family, size or model


_DASH = {"mqa": "dot", "griffin": "solid", "hawk": "dash"}


def _line(x, y, name, **kw) -> go.Scatter:
    return go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers", **kw)


def _layout(fig: go.Figure, height: int = 420) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=60, r=20, t=60, b=50), template="plotly_white")
    return fig


def _no_data(fid: str, title: str, needs: str) -> Figure:
    return Figure(fid, title, None, f"No records for this figure: it needs {needs}.")


def _drop_missing(df: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, int]:
    kept = df.dropna(subset=cols)
    return kept, len(df) - len(kept)


def train_vs_length(df: pd.DataFrame) -> Figure:
    """Paper Fig. 3: training step time vs sequence length, relative to MQA at the shortest length."""
    fid, title = (
        "fig-train",
        "Training step time vs sequence length, relative to MQA (paper Fig. 3)",
    )
    d = ok(df, "train_step")
    if d.empty:
        return _no_data(fid, title, "train_step records (e.g. suite paper-fig3)")
    d, missing = _drop_missing(d, ["seq_len"])
    d = d.assign(
        family=d["model"].map(lambda m: _family_size(m)[0]),
        size=d["model"].map(lambda m: _family_size(m)[1]),
    )
    sizes = list(dict.fromkeys(d["size"]))
    fig = make_subplots(
        rows=1, cols=len(sizes), subplot_titles=[f"size {s}" for s in sizes], shared_yaxes=True
    )
    notes = []
    from bench.catalog import REFERENCE

    for col, size in enumerate(sizes, start=1):
        ds = d[d["size"] == size]
        mqa = ds[ds["family"] == "mqa"].sort_values("seq_len")
        for impl in dict.fromkeys(ds["impl"]):
            di = ds[ds["impl"] == impl]
            # The baseline: MQA at the shortest length with the same implementation, else with the
            # reference implementation (said in the note), else none: then the panel is in ms.
            base = mqa[mqa["impl"] == impl]
            if base.empty and not mqa.empty:
                base = mqa[mqa["impl"] == REFERENCE] if (mqa["impl"] == REFERENCE).any() else mqa
                notes.append(
                    f"size {size}: {impl} is relative to MQA run by {base['impl'].iloc[0]}"
                )
            ref = None if base.empty else base["median_ms"].iloc[0]
            unit = "ms" if ref is None else "x MQA"
            for family in sorted(
                dict.fromkeys(di["family"]), key=lambda f: (f not in FAMILY_ORDER, f)
            ):
                g = di[di["family"] == family].sort_values("seq_len")
                y = g["median_ms"] / ref if ref else g["median_ms"]
                fig.add_trace(
                    _line(
                        g["seq_len"],
                        y,
                        f"{family} {size} · {impl}",
                        legendgroup=family,
                        line=dict(color=impl_color(impl), dash=_DASH.get(family, "solid")),
                        hovertemplate=f"%{{x}} tokens: %{{y:.3g}} {unit}<extra>{family}-{size} {impl}</extra>",
                    ),
                    row=1,
                    col=col,
                )
        if mqa.empty:
            notes.append(f"size {size}: no MQA record, step time in ms")
        fig.update_yaxes(
            title_text="step time (ms)" if mqa.empty else "step time / MQA at the shortest length",
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="sequence length", type="log", row=1, col=col)
    note = "Fixed tokens per batch: the batch shrinks as the length grows. " + "; ".join(notes)
    if missing:
        note += f" {missing} records without seq_len were left out."
    return Figure(fid, title, _layout(fig), note, bool(missing))


def decode_latency(df: pd.DataFrame) -> Figure:
    """Paper Fig. 4: time to sample N tokens after a prefill, one panel per prefill length."""
    fid, title = "fig-decode", "Decode latency vs tokens sampled, per prefill length (paper Fig. 4)"
    d = ok(df, "decode")
    if d.empty:
        return _no_data(fid, title, "decode records (e.g. suite paper-fig4)")
    d, missing = _drop_missing(d, ["steps", "prompt", "batch"])
    batch = 16 if (d["batch"] == 16).any() else int(d["batch"].max())
    d = d[d["batch"] == batch]
    prompts = sorted(d["prompt"].unique())
    fig = make_subplots(
        rows=1, cols=len(prompts), subplot_titles=[f"prefill {int(p)}" for p in prompts]
    )
    for col, prompt in enumerate(prompts, start=1):
        dp = d[d["prompt"] == prompt]
        for (model, impl), g in dp.groupby(["model", "impl"], sort=False):
            g = g.sort_values("steps")
            fig.add_trace(
                _line(
                    g["steps"],
                    g["median_ms"],
                    f"{model} · {impl}",
                    legendgroup=f"{model}{impl}",
                    showlegend=col == 1,
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=list(g["p80_ms"] - g["median_ms"]),
                        arrayminus=list(g["median_ms"] - g["p20_ms"]),
                    ),
                    hovertemplate="%{x} tokens: %{y:.4g} ms<extra>" + f"{model} {impl}</extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="tokens sampled", type="log", row=1, col=col)
    fig.update_yaxes(title_text="latency (ms)", type="log", row=1, col=1)
    note = f"Batch {batch}; median with p20-p80 bars. A prefill of 1 stands for the paper's empty prompt."
    if missing:
        note += f" {missing} records without steps/prompt/batch were left out."
    return Figure(fid, title, _layout(fig), note, bool(missing))


def max_throughput(df: pd.DataFrame) -> Figure:
    """Paper Fig. 1b: tokens/s at the largest batch that fits, vs generated length."""
    fid, title = "fig-throughput", "Maximum throughput vs generated length (paper Fig. 1b)"
    d = ok(df, "throughput")
    if d.empty:
        return _no_data(fid, title, "throughput records (e.g. suite paper-fig1b)")
    d, missing = _drop_missing(d, ["gen_len", "tokens_per_s"])
    fig = go.Figure()
    for (model, impl), g in d.groupby(["model", "impl"], sort=False):
        g = g.sort_values("gen_len")
        fig.add_trace(
            _line(
                g["gen_len"],
                g["tokens_per_s"],
                f"{model} · {impl}",
                customdata=g["found_batch"],
                hovertemplate="%{x} tokens: %{y:.4g} tok/s at batch %{customdata}<extra>"
                + f"{model} {impl}</extra>",
                text=[f"b={int(b)}" if pd.notna(b) else "" for b in g["found_batch"]],
                textposition="top center",
            )
        )
        fig.data[-1].mode = "lines+markers+text"
    fig.update_xaxes(title_text="tokens generated", type="log")
    fig.update_yaxes(title_text="tokens / s")
    note = "Each point is labelled with the batch the search found (the largest that fit, or max_batch)."
    if missing:
        note += f" {missing} records were left out (missing fields)."
    return Figure(fid, title, _layout(fig), note, bool(missing))


def kernels(df: pd.DataFrame) -> Figure:
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
            fig.add_trace(
                _line(
                    g["seq_len"],
                    g["gbps"],
                    impl,
                    legendgroup=impl,
                    showlegend=impl not in {t.name for t in fig.data},
                    line=dict(color=impl_color(impl)),
                    customdata=g["mbu"] * 100,
                    hovertemplate="%{x}: %{y:.4g} GB/s (%{customdata:.0f}% of copy)<extra>"
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


def memory(df: pd.DataFrame) -> Figure:
    """Measured decode-state memory per sequence vs context length, against the analytic size."""
    fid, title = (
        "fig-memory",
        "Decode state memory vs context length: measured and analytic (App. F.4)",
    )
    d = ok(df)
    d = d.dropna(subset=["cache_bytes", "cache_length"])
    if d.empty:
        return _no_data(fid, title, "prefill/decode/throughput records with cache sizes")
    batch = d["batch"].fillna(d["found_batch"]).fillna(1)
    d = d.assign(
        per_seq=d["cache_bytes"] / batch / 2**20, analytic=d["cache_bytes_analytic"] / batch / 2**20
    )
    fig = go.Figure()
    for (model, impl), g in d.groupby(["model", "impl"], sort=False):
        g = g.sort_values("cache_length").drop_duplicates("cache_length")
        fig.add_trace(
            go.Scatter(
                x=list(g["cache_length"]),
                y=list(g["per_seq"]),
                mode="markers",
                name=f"{model} · {impl} (measured)",
                legendgroup=model,
                hovertemplate="%{x} tokens: %{y:.4g} MiB<extra>" + f"{model} {impl}</extra>",
            )
        )
    for model, g in d.groupby("model", sort=False):
        g = g.sort_values("cache_length").drop_duplicates("cache_length")
        fig.add_trace(
            go.Scatter(
                x=list(g["cache_length"]),
                y=list(g["analytic"]),
                mode="lines",
                line=dict(dash="dash"),
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


def peers(df: pd.DataFrame) -> Figure:
    """End-to-end comparison: median time of every implementation per case, with MFU / MBU."""
    fid, title = "fig-peers", "End-to-end peer comparison (prefill, decode, training step)"
    d = ok(df)
    d = d[d["workload"].isin(["prefill", "decode", "train_step"])]
    if d.empty:
        return _no_data(fid, title, "prefill, decode or train_step records")
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
            labels = [
                " ".join(
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
                    legendgroup=impl,
                    showlegend=impl not in shown,
                    text=labels,
                    textposition="outside",
                    hovertemplate="%{y:.4g} ms %{text}<extra>" + impl + "</extra>",
                ),
                row=row,
                col=1,
            )
            shown.add(impl)
        fig.update_yaxes(title_text="median ms", type="log", row=row, col=1)
    fig.update_layout(barmode="group")
    note = "Log scale. MFU and MBU are against the matmul rate and copy bandwidth measured in the same run."
    return Figure(fid, title, _layout(fig, 320 * len(workloads) + 80), note)


ALL = (train_vs_length, decode_latency, max_throughput, kernels, memory, peers)
