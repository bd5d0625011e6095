"""A text summary of records: one row per point, the newest record of each key.

`show(paths, impls=..., models=..., workloads=..., statuses=..., fmt="table")`: the table fits 120
columns (a long note is cut; csv, markdown and json carry every column in full).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.results import latest, note, read_records

FORMATS = ("table", "csv", "markdown", "json")
WIDTH = 120


def _fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def rows(
    paths: list[Path], impls=None, models=None, workloads=None, statuses=None
) -> tuple[list[dict], list[str]]:
    """(one row per point, newest record of each key, filtered; the files' problems)."""
    out, problems = [], []
    for path in paths:
        records, issues = read_records(path)
        problems += issues
        for r in latest(records).values():
            if (impls and r["impl"] not in impls) or (models and r["model"] not in models):
                continue
            if workloads and r["workload"] not in workloads:
                continue
            if statuses and r["status"] not in statuses:
                continue
            params = " ".join(
                f"{k}={v}" for k, v in (r.get("params") or {}).items() if v is not None
            )
            timing, metrics = r.get("timing") or {}, r.get("metrics") or {}
            corr = r.get("correctness") or {}
            out.append(
                {
                    "workload": r["workload"],
                    "model": r["model"],
                    "impl": r["impl"],
                    "dtype": r.get("dtype"),
                    "params": params,
                    "status": r["status"],
                    "median_ms": timing.get("median_ms"),
                    "p20_ms": timing.get("p20_ms"),
                    "p80_ms": timing.get("p80_ms"),
                    "reps": timing.get("reps"),
                    "tokens_per_s": metrics.get("tokens_per_s"),
                    "mfu": metrics.get("mfu"),
                    "mbu": metrics.get("mbu"),
                    "rel_err": corr.get("rel_err"),
                    "note": note(r),
                }
            )
    out.sort(key=lambda r: (r["workload"], r["model"] or "", r["params"], r["impl"] or ""))
    return out, problems


def _spread(r: dict) -> str:
    """(p80 - p20) / median, the table's one-column spread (csv and json: p20_ms, p80_ms)."""
    if r["p20_ms"] is None or not r["median_ms"]:
        return ""
    return f"{(r['p80_ms'] - r['p20_ms']) / r['median_ms']:.1%}"


def _text(r: dict) -> dict:
    """A row's cells as the table prints them."""
    return {
        "workload": r["workload"],
        "model": r["model"],
        "impl": r["impl"],
        "params": r["params"],
        "status": r["status"],
        "median_ms": _fmt(r["median_ms"], ".4g"),
        "spread": _spread(r),
        "reps": _fmt(r["reps"], "d"),
        "tok/s": _fmt(r["tokens_per_s"], ".4g"),
        "MFU": _fmt(r["mfu"], ".1%"),
        "MBU": _fmt(r["mbu"], ".1%"),
        "rel_err": _fmt(r["rel_err"], ".2g"),
        "note": r["note"],
    }


def render(table: list[dict], fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(table, indent=1)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else ["workload"])
        writer.writeheader()
        writer.writerows(table)
        return buf.getvalue().rstrip("\n")
    cells = [_text(r) for r in table]
    if fmt == "table":  # one block per workload, under its name
        blocks = []
        for name in dict.fromkeys(c["workload"] for c in cells):
            rows_ = [{k: v for k, v in c.items() if k != "workload"} for c in cells]
            mine = [r for r, c in zip(rows_, cells, strict=True) if c["workload"] == name]
            blocks.append(f"{name}:\n" + _fit(mine))
        return "\n\n".join(blocks)
    if fmt == "markdown":
        head = list(cells[0]) if cells else ["workload"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in cells:
            lines.append("| " + " | ".join(str(c[k]).replace("|", "\\|") for k in head) + " |")
        return "\n".join(lines)


def _fit(cells: list[dict]) -> str:
    """Aligned columns within WIDTH: the note, the params, the model, the implementation are cut
    in turn (with an ellipsis) to what is left."""
    if not cells:
        return ""
    cols = list(cells[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in cells)) for c in cols}
    for c, least in (("note", 4), ("params", 18), ("model", 12), ("impl", 20), ("params", 12)):
        over = sum(w + 1 for w in width.values()) - 1 - WIDTH
        if over > 0:
            width[c] = max(least, width[c] - over)
    right = {"median_ms", "spread", "reps", "tok/s", "MFU", "MBU", "rel_err"}

    def line(values: dict) -> str:
        parts = []
        for c in cols:
            v = str(values[c])
            if len(v) > width[c]:
                v = v[: width[c] - 1] + "…"
            parts.append(v.rjust(width[c]) if c in right else v.ljust(width[c]))
        return " ".join(parts).rstrip()

    return "\n".join([line({c: c for c in cols}), *(line(r) for r in cells)])


def show(paths: list[Path], fmt: str = "table", **filters) -> int:
    """Print the table; the number of rows shown."""
    table, problems = rows(paths, **filters)
    for p in problems:
        print(f"warning: {p}")
    if not table:
        print("no records" + (" match the filters" if any(filters.values()) else ""))
        return 0
    print(render(table, fmt))
    return len(table)
