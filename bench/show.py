"""A text summary of records: one row per point, newest record per key."""

from __future__ import annotations

from pathlib import Path

from bench.results import note, read_records


def _fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def show(paths: list[Path]) -> None:
    import pandas as pd

    rows = []
    for path in paths:
        records, problems = read_records(path)
        for p in problems:
            print(f"warning: {p}")
        latest = {}
        for r in records:
            if r["workload"] != "ceiling":
                latest[r["key"]] = r
        for r in latest.values():
            params = " ".join(
                f"{k}={v}" for k, v in (r.get("params") or {}).items() if v is not None
            )
            timing, metrics = r.get("timing") or {}, r.get("metrics") or {}
            corr = r.get("correctness") or {}
            rows.append(
                {
                    "workload": r["workload"],
                    "model": r["model"],
                    "impl": r["impl"],
                    "dtype": r.get("dtype"),
                    "params": params,
                    "status": r["status"],
                    "median_ms": _fmt(timing.get("median_ms"), ".4g"),
                    "tok/s": _fmt(metrics.get("tokens_per_s"), ".4g"),
                    "MFU": _fmt(metrics.get("mfu"), ".1%"),
                    "MBU": _fmt(metrics.get("mbu"), ".1%"),
                    "rel_err": _fmt(corr.get("rel_err"), ".2g"),
                    "note": note(r)[:60],
                }
            )
    if not rows:
        print("no records")
        return
    df = pd.DataFrame(rows).sort_values(["workload", "model", "params", "impl"], kind="stable")
    with pd.option_context(
        "display.max_rows", None, "display.width", 200, "display.max_colwidth", 60
    ):
        print(df.to_string(index=False))
