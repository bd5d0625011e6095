"""Records -> one flat pandas DataFrame with the columns the figures use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.results import note, read_records

COLUMNS = (
    "source",
    "run_id",
    "suite",
    "key",
    "workload",
    "model",
    "impl",
    "role",
    "backend",
    "dtype",
    "status",
    "error",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "reps",
    "timer",
    "tokens_per_s",
    "tflops",
    "mfu",
    "gbps",
    "mbu",
    "rel_err",
    "tol",
    "cache_bytes",
    "cache_bytes_analytic",
    "cache_length",
    "peak_alloc_bytes",
    "batch",
    "prompt",
    "steps",
    "seq_len",
    "gen_len",
    "backward",
    "tokens_per_batch",
    "checkpoint",
    "max_batch",
    "found_batch",
    "limited_by",
    "work_bytes",
    "params",
    "device",
    "copy_gbps",
)


def _flat(rec: dict, source: str) -> dict:
    timing = rec.get("timing") or {}
    metrics = rec.get("metrics") or {}
    corr = rec.get("correctness") or {}
    memory = rec.get("memory") or {}
    params = rec.get("params") or {}
    extra = rec.get("extra") or {}
    env = rec.get("env") or {}
    gpu = env.get("gpu") or {}
    return {
        "source": source,
        "run_id": rec.get("run_id"),
        "suite": rec.get("suite"),
        "key": rec.get("key"),
        "workload": rec.get("workload"),
        "model": rec.get("model"),
        "impl": rec.get("impl"),
        "role": rec.get("role"),
        "backend": rec.get("backend"),
        "dtype": rec.get("dtype"),
        "status": rec.get("status"),
        "error": note(rec) or None,
        "median_ms": timing.get("median_ms"),
        "p20_ms": timing.get("p20_ms"),
        "p80_ms": timing.get("p80_ms"),
        "reps": timing.get("reps"),
        "timer": rec.get("timer"),
        "tokens_per_s": metrics.get("tokens_per_s"),
        "tflops": metrics.get("tflops"),
        "mfu": metrics.get("mfu"),
        "gbps": metrics.get("gbps"),
        "mbu": metrics.get("mbu"),
        "rel_err": corr.get("rel_err"),
        "tol": corr.get("tol"),
        "cache_bytes": memory.get("cache_bytes"),
        "cache_bytes_analytic": memory.get("cache_bytes_analytic"),
        "cache_length": memory.get("cache_length"),
        "peak_alloc_bytes": memory.get("peak_alloc_bytes"),
        "batch": params.get("batch"),
        "prompt": params.get("prompt"),
        "steps": params.get("steps"),
        "seq_len": params.get("seq_len"),
        "gen_len": params.get("gen_len"),
        "backward": params.get("backward"),
        "tokens_per_batch": params.get("tokens_per_batch"),
        "checkpoint": params.get("checkpoint"),
        "max_batch": params.get("max_batch"),
        "found_batch": extra.get("batch"),
        "limited_by": extra.get("limited_by"),
        "work_bytes": (rec.get("work") or {}).get("bytes"),
        "params": " ".join(f"{k}={v}" for k, v in params.items() if v is not None),
        "device": gpu.get("name") or env.get("device"),
        "copy_gbps": (rec.get("ceilings") or {}).get("copy_gbps"),
    }


def load(paths: list[Path]) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """(points DataFrame, ceiling/environment records, problems). The newest record of a key wins."""
    rows, runs, problems = [], [], []
    for path in paths:
        records, issues = read_records(path)
        problems += issues
        for rec in records:
            if rec.get("workload") == "ceiling":
                runs.append({**rec, "source": str(path)})
                continue
            try:
                rows.append(_flat(rec, str(path)))
            except (AttributeError, TypeError) as exc:  # a field of the wrong type
                problems.append(f"{path}: record {rec.get('key')!r} is malformed ({exc}); skipped")
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(df):
        df = df.drop_duplicates(subset=["source", "key"], keep="last").reset_index(drop=True)
    return df, runs, problems


def ok(df: pd.DataFrame, workload: str | None = None) -> pd.DataFrame:
    """Only measurements that passed the gate: mismatched or failed points are never drawn."""
    sel = df[(df["status"] == "ok") & df["median_ms"].notna()]
    return sel if workload is None else sel[sel["workload"] == workload]
