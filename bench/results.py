"""Records: one JSON line per (case x implementation), schema-versioned, appended and flushed one
by one, so a crash, an OOM or a kill mid-sweep loses no finished measurement.

    from bench.results import load
    df = load("results/h100/rg-2b.jsonl")        # pandas DataFrame, nested fields flattened
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "mismatch", "unavailable")
REQUIRED = ("schema", "run_id", "key", "workload", "model", "impl", "status")


class RecordWriter:
    """Appends records to a JSONL file, one flushed line each.

    A torn last line (a write cut off by a kill) is cut away when the writer opens the file, so
    the next record starts on a line of its own; the torn point is simply measured again.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_torn_tail(self.path)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=_json_default)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def _json_default(obj):
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _repair_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        f.truncate(data.rfind(b"\n") + 1)


def read_records(path: str | Path) -> tuple[list[dict], list[str]]:
    """All well-formed records of a file, and a list of problems (torn/invalid lines, unknown
    schema versions, missing fields) — never an exception for a damaged file."""
    path = Path(path)
    records: list[dict] = []
    problems: list[str] = []
    if not path.exists():
        return records, [f"{path}: no such file"]
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            where = "last line (torn write?)" if i >= len(lines) - 1 else f"line {i}"
            problems.append(f"{path}: {where} is not valid JSON ({exc.msg}); skipped")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path}: line {i} is not a JSON object; skipped")
            continue
        if rec.get("schema") != SCHEMA_VERSION:
            problems.append(
                f"{path}: line {i} has schema version {rec.get('schema')!r}, this griffin-bench "
                f"reads version {SCHEMA_VERSION}; skipped"
            )
            continue
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            problems.append(f"{path}: line {i} lacks fields {missing}; skipped")
            continue
        records.append(rec)
    return records, problems


def note(rec: dict) -> str:
    """What a table says beside a record: its error, or the warnings its point raised (a number
    measured on a degraded path, extra.warnings), else nothing."""
    if rec.get("error"):
        return str(rec["error"])
    warned = (rec.get("extra") or {}).get("warnings") or []
    return ("warning: " + "; ".join(warned)) if warned else ""


def recorded_keys(path: str | Path, run_id: str | None = None) -> set[str]:
    """Keys of the points a file already holds (any status; only the run's, given `run_id`)."""
    records, _ = read_records(path)
    return {
        r["key"]
        for r in records
        if r.get("workload") != "ceiling" and (run_id is None or r["run_id"] == run_id)
    }


def latest(records: Iterable[dict]) -> dict[str, dict]:
    """{key: its newest record}, ceiling rows left out: the newest record of a point wins
    everywhere (the report, `show`, `compare`, a rerun); older ones stay in the file."""
    return {r["key"]: r for r in records if r.get("workload") != "ceiling"}


def latest_status(path: str | Path) -> dict[str, str]:
    """{key: status of its newest record}."""
    return {k: r["status"] for k, r in latest(read_records(path)[0]).items()}


def load(paths: str | Path | Iterable[str | Path], *, warn: bool = True):
    """Records of one or more JSONL files as a pandas DataFrame (nested fields flattened with
    dots: "timing.median_ms", "metrics.tokens_per_s", ...). Damaged lines are skipped with a
    warning naming the file and line."""
    import pandas as pd

    if isinstance(paths, str | Path):
        paths = [paths]
    rows: list[dict] = []
    for path in paths:
        records, problems = read_records(path)
        if warn:
            for p in problems:
                warnings.warn(p, stacklevel=2)
        for rec in records:
            rec = dict(rec)
            rec["source"] = str(path)
            rows.append(rec)
    df = pd.json_normalize(rows, max_level=1) if rows else pd.DataFrame()
    return df
