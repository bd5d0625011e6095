"""One HTML page from records files; opens offline.

plotly.js goes either inside the page (``plotly_js="inline"``, the default: one self-contained
file to mail or attach) or once into ``plotly.min.js`` beside the page (``"shared"``: the
committed reports under ``reports/`` share it, so each page is its data, not 4.6 MB of script).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from bench.report import data, figures

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
.no-data { background: #f7f7f7; border: 1px dashed #aaa; padding: 12px; color: #555; }
.incomplete { color: #a05000; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
.problems { background: #fff4e5; border: 1px solid #f0b060; padding: 8px 16px; }
.status-ok { color: #17703a; } .status-mismatch, .status-error { color: #b00020; font-weight: bold; }
.status-oom { color: #a05000; } .status-unavailable { color: #777; }
#records-filter { margin: 8px 0; }
.claim { font-style: italic; margin-bottom: 4px; }
.verdict-holds { color: #17703a; } .verdict-fails { color: #b00020; font-weight: bold; }
.verdict-missing { color: #777; }
"""

TABLE_JS = """
const COLS = ["workload","model","impl","dtype","params","status","median_ms","timer","tokens_per_s",
              "mfu","mbu","rel_err","tol","error"];
function fmt(c, v) {
  if (v === null || v === undefined) return "";
  if (c === "mfu" || c === "mbu") return (100 * v).toFixed(1) + "%";
  if (typeof v === "number") return Number(v.toPrecision(4)).toString();
  return String(v);
}
function renderRecords() {
  const want = document.getElementById("records-filter").value;
  const body = document.getElementById("records-body");
  const rows = [];
  for (const r of RECORDS) {
    if (want && r.status !== want) continue;
    rows.push("<tr>" + COLS.map(c => {
      const cls = c === "status" ? ` class="status-${r.status}"` : "";
      const text = fmt(c, r[c]).replace(/&/g, "&amp;").replace(/</g, "&lt;");
      return `<td${cls}>${text}</td>`;
    }).join("") + "</tr>");
  }
  body.innerHTML = rows.join("");
  document.getElementById("records-count").textContent = rows.length + " records";
}
document.getElementById("records-filter").addEventListener("change", renderRecords);
renderRecords();
"""


def _esc(x) -> str:
    return html.escape("" if x is None else str(x))


def _cpu_caveat(df) -> str:
    paper_cpu = df["workload"].isin(["train_step", "decode", "throughput"]) & (
        df["device"] == "cpu"
    )
    if not paper_cpu.any():
        return ""
    return (
        " <b>Some of these records were measured on the CPU</b> (tiny presets, Triton kernels in "
        "their interpreter): their verdicts check the harness, not the paper's claims, which are "
        "about the paper's sizes on an accelerator."
    )


_VERDICT_CLASS = {"holds": "holds", "does not hold": "fails", "not measured": "missing"}


def _verdicts(f: figures.Figure) -> str:
    """The paper's claim under its figure, and a verdict per implementation, size and family."""
    if not f.claim:
        return ""
    v = f.verdicts
    if v is None or v.empty:
        rows = '<tr><td></td><td class="verdict-missing">not measured: no records</td></tr>'
    else:
        v = v.assign(order=v["impl"].map(figures._order(v["impl"]).index)).sort_values(
            "order", kind="stable"
        )
        rows = "".join(
            f"<tr><td>{_esc(r.impl)}</td>"
            f'<td class="verdict-{_VERDICT_CLASS[r.verdict]}">{_esc(r.text)}</td></tr>'
            for r in v.itertuples()
        )
    return (
        f'<p class="claim">{_esc(f.claim)}</p>'
        '<table class="verdicts"><tr><th>implementation</th><th>verdict (from these records)</th>'
        f"</tr>{rows}</table>"
    )


def rate(value, unit: str) -> str:
    """A rate in the SI prefix that keeps 3 significant digits readable: rate(0.052e12, "FLOP/s")
    is "52 GFLOP/s", rate(4222e9, "B/s") "4.22 TB/s"; "?" when the run measured none."""
    if not isinstance(value, int | float) or value != value or value <= 0:
        return "?"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _ceilings(ceil: dict) -> str:
    """The measured ceilings of a run, each with its unit and magnitude (a CPU's matmul rate is
    tens of GFLOP/s, not "0 TFLOP/s")."""
    copy, mm = ceil.get("copy_gbps"), ceil.get("matmul_tflops")
    dtype = f" ({ceil['matmul_dtype']})" if ceil.get("matmul_dtype") else ""
    return (
        f"copy {rate(copy * 1e9 if copy else None, 'B/s')}, "
        f"matmul {rate(mm * 1e12 if mm else None, 'FLOP/s')}{dtype}"
    )


def _environment(runs: list[dict], paths: list[Path], out: Path) -> str:
    rows = []
    for r in runs:
        env = r.get("env") or {}
        gpu = env.get("gpu") or {}
        state = r.get("gpu_state") or {}
        ceil = r.get("ceilings") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_esc(v)}</td>"
                for v in (
                    r.get("run_id"),
                    env.get("date"),
                    gpu.get("name") or env.get("device"),
                    gpu.get("driver"),
                    f"{state.get('sm_clock_mhz')}/{gpu.get('max_sm_clock_mhz')} MHz" if gpu else "",
                    f"{state.get('power_w')}/{gpu.get('power_limit_w')} W" if gpu else "",
                    _ceilings(ceil),
                    env.get("git_sha"),
                    versions,
                )
            )
            + "</tr>"
        )
    head = (
        "run",
        "date",
        "device",
        "driver",
        "SM clock (now/max)",
        "power (now/limit)",
        "measured ceilings",
        "git sha",
        "versions",
    )
    links = " ".join(
        f'<a href="{_esc(os.path.relpath(p.resolve(), out.resolve().parent))}">{_esc(p.name)}</a>'
        for p in paths
    )
    table = (
        "<table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else '<p class="no-data">No environment records (ceiling records) in these files.</p>'
    )
    return f"<h2>Environment</h2>{table}<p>Raw records: {links}</p>"


PLOTLY_JS_MODES = ("inline", "shared")
SHARED_JS = "plotly.min.js"


def build(
    paths: list[str | Path],
    out: str | Path,
    title: str | None = None,
    plotly_js: str = "inline",
) -> Path:
    """Write the report of `paths` (JSONL records files) to `out`; returns its path."""
    if plotly_js not in PLOTLY_JS_MODES:
        raise ValueError(f"plotly_js={plotly_js!r}: valid values are {', '.join(PLOTLY_JS_MODES)}")
    paths = [Path(p) for p in paths]
    out = Path(out)
    script = (
        f'<script src="{SHARED_JS}"></script>'
        if plotly_js == "shared"
        else f"<script>{get_plotlyjs()}</script>"
    )
    df, runs, problems = data.load(paths)
    title = title or "griffin-bench report: " + ", ".join(p.stem for p in paths)
    parts = [f"<h1>{_esc(title)}</h1>"]
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    parts.append(
        "<p>"
        + f"{len(df)} measurement records: "
        + ", ".join(f'<span class="status-{k}">{v} {k}</span>' for k, v in counts.items())
        + ". Only <b>ok</b> records are drawn: a point that failed its correctness gate "
        "(<i>mismatch</i>) or did not run (<i>oom</i>, <i>error</i>, <i>unavailable</i>) is listed "
        "in the table at the bottom, never plotted as a valid speed.</p>"
    )
    if problems:
        items = "".join(f"<li>{_esc(p)}</li>" for p in problems[:200])
        more = f"<li>... and {len(problems) - 200} more</li>" if len(problems) > 200 else ""
        parts.append(
            f'<div class="problems"><b>Problems reading the records</b><ul>{items}{more}</ul></div>'
        )
    parts.append(_environment(runs, paths, out))

    colors = figures.impl_colors(df["impl"].dropna().unique())  # one colour per implementation
    for make in figures.ALL:
        if make is figures.PAPER[0]:
            parts.append(
                '<h2 id="paper">Paper figures</h2><p>The efficiency figures of the Griffin paper '
                "(De et al. 2024), drawn as the paper draws them, each with the paper's claim and "
                "a verdict computed from these records (ok records only; a verdict needs the "
                "family and MQA at the same size, implementation and point)."
                + _cpu_caveat(df)
                + "</p>"
            )
        elif make is figures.ALL[len(figures.PAPER)]:
            parts.append("<h2>Other figures</h2>")
        try:
            f = make(df, colors)
        except Exception as exc:  # a figure must never take the page down
            f = figures.Figure(
                make.__name__, make.__name__, None, f"This figure failed to build: {exc!r}", True
            )
        parts.append(f'<section class="figure" id="{f.id}"><h3>{_esc(f.title)}</h3>')
        if f.fig is None:
            parts.append(f'<p class="no-data">{_esc(f.note)}</p>')
        else:
            parts.append(
                pio.to_html(
                    f.fig,
                    full_html=False,
                    include_plotlyjs=False,
                    div_id=f.id + "-plot",
                    config={"displaylogo": False, "responsive": True},
                )
            )
            flag = '<span class="incomplete">Incomplete. </span>' if f.incomplete else ""
            parts.append(f'<p class="note">{flag}{_esc(f.note)}</p>')
        parts.append(_verdicts(f))
        parts.append("</section>")

    records = (
        df.drop(
            columns=[
                "source",
                "key",
                "run_id",
                "suite",
                "tokens_per_batch",
                "max_batch",
                "limited_by",
                "work_bytes",
            ]
        )
        .astype(object)
        .where(df.notna(), None)
    )
    payload = json.dumps(records.to_dict("records"), default=str).replace("</", "<\\/")
    options = "".join(
        f'<option value="{s}">{s}</option>'
        for s in ("ok", "mismatch", "oom", "error", "unavailable")
    )
    parts.append(
        '<section id="records"><h2>Every record</h2>'
        f'<label>status <select id="records-filter"><option value="">all</option>{options}</select></label> '
        '<span id="records-count"></span>'
        "<table><thead><tr>"
        + "".join(
            f"<th>{c}</th>"
            for c in (
                "workload",
                "model",
                "impl",
                "dtype",
                "params",
                "status",
                "median ms",
                "timer",
                "tokens/s",
                "MFU",
                "MBU",
                "rel err",
                "tol",
                "error",
            )
        )
        + '</tr></thead><tbody id="records-body"></tbody></table></section>'
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{STYLE}</style>{script}</head><body>"
        + "".join(parts)
        + f"<script>const RECORDS = {payload};\n{TABLE_JS}</script></body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if plotly_js == "shared":
        _write_shared_js(out.parent / SHARED_JS)
    out.write_text(page, encoding="utf-8")
    return out


def _write_shared_js(path: Path) -> None:
    """plotly.js of the installed plotly beside the pages; rewritten only when it differs."""
    js = get_plotlyjs()
    if not path.exists() or path.read_text(encoding="utf-8") != js:
        path.write_text(js, encoding="utf-8")
