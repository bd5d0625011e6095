"""The README's headline tables, generated from one device's committed records.

    python -m bench headline results/h200                    # print the markdown
    python -m bench headline results/h200 --write README.md  # replace the README's section

Decode (ms per step, tokens/s, MBU) for the RecurrentGemma-2B and Gemma-2B shapes by batch and
context, prefill and training-step MFU outside the paper suites, the kernels' bandwidth against
their fastest peer, and the paper's claims with their verdicts (bench.report.paper). Every
number is the newest `ok` record of its point; each table names the files and commits it read.
A test keeps the README's section equal to what this writes from the committed records.
"""

from __future__ import annotations

from pathlib import Path

from bench.results import latest, read_records

BEGIN = "<!-- headline: python -m bench headline results/{device} --write README.md -->"
END = "<!-- headline: end -->"
DECODE_MODELS = ("recurrentgemma-2b", "gemma-2b")


def _records(folder: Path) -> list[dict]:
    """The newest record of every point over the folder's records files (in name order)."""
    out: dict[str, dict] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for key, rec in latest(read_records(path)[0]).items():
            out[f"{path.stem}|{key}"] = {**rec, "_file": path.name}
    return list(out.values())


def _source(recs: list[dict]) -> str:
    files = sorted({r["_file"] for r in recs})
    shas = sorted({str((r.get("env") or {}).get("git_sha") or "?")[:7] for r in recs})
    return f"From {', '.join(files)} (commit {', '.join(shas)})."


def _size(model: str) -> tuple:
    """Sort key: family, then parameter count (griffin-200m before griffin-1b)."""
    from models.config import PRESETS, param_count, preset

    if model not in PRESETS:
        return (model, 0)
    return (model.split("-")[0], param_count(preset(model)))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _num(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def decode(recs: list[dict]) -> str:
    d = [
        r
        for r in recs
        if r["workload"] == "decode" and r["model"] in DECODE_MODELS and r["status"] == "ok"
    ]
    if not d:
        return "No decode records of the RecurrentGemma-2B or Gemma-2B shapes yet (suite `decode`)."
    d.sort(key=lambda r: (r["model"], r["params"]["prompt"], r["params"]["batch"], r["impl"]))
    rows = []
    for r in d:
        p, m = r["params"], r.get("metrics") or {}
        rows.append(
            [
                r["model"],
                r["impl"],
                str(p["batch"]),
                str(p["prompt"]),
                _num(r["timing"]["median_ms"] / p["steps"], ".3f"),
                _num(m.get("tokens_per_s"), ",.0f"),
                _pct(m.get("mbu")),
            ]
        )
    head = ["model", "implementation", "batch", "context", "ms / step", "tokens/s", "MBU"]
    return _table(head, rows) + "\n\n" + _source(d)


def compute(recs: list[dict]) -> str:
    d = [
        r
        for r in recs
        if r["workload"] in ("prefill", "train_step")
        and r["status"] == "ok"
        and not str(r.get("suite", "")).startswith("paper")
    ]
    if not d:
        return "No prefill or training records outside the paper suites yet."
    d.sort(key=lambda r: (r["workload"], _size(r["model"]), r["impl"], sorted(r["params"].items())))
    rows = []
    for r in d:
        p, m = r["params"], r.get("metrics") or {}
        t = p.get("prompt") if r["workload"] == "prefill" else p.get("seq_len")
        rows.append(
            [
                r["workload"],
                r["model"],
                r["impl"],
                f"{p.get('batch')} × {t}",
                _num(r["timing"]["median_ms"], ".1f"),
                _num(m.get("tokens_per_s"), ",.0f"),
                _pct(m.get("mfu")),
            ]
        )
    head = ["workload", "model", "implementation", "batch × tokens", "ms", "tokens/s", "MFU"]
    return _table(head, rows) + "\n\n" + _source(d)


def kernels(recs: list[dict]) -> str:
    d = [r for r in recs if r["workload"].startswith("kernel_") and r["status"] == "ok"]
    if not d:
        return "No kernel records on this device yet (suite `kernels`)."
    points: dict[tuple, list[dict]] = {}
    for r in d:
        p = r["params"]
        points.setdefault((r["workload"], p.get("backward"), p.get("seq_len")), []).append(r)
    rows, used = [], []
    for (wl, backward, t), group in sorted(points.items()):
        ours = [r for r in group if r.get("role") == "ours"]
        peers = [r for r in group if r.get("role") == "peer"]
        if not ours:
            continue
        best = min(ours, key=lambda r: r["timing"]["median_ms"])
        peer = min(peers, key=lambda r: r["timing"]["median_ms"]) if peers else None
        used += [best] + ([peer] if peer else [])
        copy = ((best.get("ceilings") or {}).get("copy_gbps")) or None
        gbps = (best.get("metrics") or {}).get("gbps")
        rows.append(
            [
                wl.removeprefix("kernel_") + (" fwd+bwd" if backward else " fwd"),
                str(t),
                best["impl"],
                _num(best["timing"]["median_ms"], ".3f"),
                _pct(gbps / copy) if gbps and copy else "",
                peer["impl"] if peer else "",
                _num(peer["timing"]["median_ms"] / best["timing"]["median_ms"], ".2f") + "×"
                if peer
                else "",
            ]
        )
    head = ["kernel", "T", "ours (fastest)", "ms", "of copy bandwidth", "fastest peer", "speed-up"]
    return _table(head, rows) + "\n\n" + _source(used)


def claims(recs: list[dict]) -> str:
    import pandas as pd

    from bench.report import data, paper

    paths = sorted({r["_file"] for r in recs if str(r.get("suite", "")).startswith("paper")})
    if not paths:
        return "No paper-figure records yet (`python -m bench run paper`)."
    folder = Path(recs[0]["_dir"])
    df, _, _ = data.load([folder / p for p in paths])
    v = paper.verdicts(df) if len(df) else pd.DataFrame()
    if not len(v):
        return "No verdicts from the paper-figure records yet."
    # the optimized implementations' verdicts (the reference's only shows the gap)
    v = v[(v["verdict"] != "not measured") & v["impl"].str.endswith("-optimized")]
    lines = [f"- {t} ({impl})" for t, impl in zip(v["text"], v["impl"], strict=True)]
    return "\n".join(lines) + "\n\n" + f"From {', '.join(paths)}."


def tables(folder: Path) -> str:
    """The headline section (markdown) of a device's records folder, e.g. results/h200."""
    recs = [{**r, "_dir": str(folder)} for r in _records(folder)]
    device = folder.name
    parts = [
        f"**Decode** ({device}):\n\n" + decode(recs),
        f"**Prefill and training** ({device}):\n\n" + compute(recs),
        f"**Kernels** ({device}):\n\n" + kernels(recs),
        f"**The paper's claims** ({device}):\n\n" + claims(recs),
    ]
    return "\n\n".join(parts) + "\n"


def section(folder: Path) -> str:
    """The section with its markers, as the README holds it."""
    return BEGIN.format(device=folder.name) + "\n\n" + tables(folder) + "\n" + END


def write(folder: Path, readme: Path) -> None:
    """Replace the README's section (between BEGIN and END) with the folder's tables."""
    text = readme.read_text()
    begin = BEGIN.format(device=folder.name)
    if begin not in text or END not in text:
        raise ValueError(f"{readme}: no headline section (the lines {begin!r} ... {END!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + section(folder) + tail)
