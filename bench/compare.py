"""Two records files side by side: per point, the ratio of medians B/A, a bootstrap 95% interval
of that ratio, a Mann-Whitney U p-value and a verdict.

    python -m bench compare A.jsonl B.jsonl [--format table|csv|json] [--html PATH]

Pure functions over lists of record dicts (``compare(records_a, records_b)``), so that a test
or a notebook can call them without files. A point is a record's ``key``; the newest (last)
record of a key in a file wins; records with no ``params`` (the ``ceiling`` rows) are no points.
A change is claimed only from an interval and the rank test together: ``slower`` when the
interval's lower bound is above 1 and p < 0.05, ``faster`` when its upper bound is below 1 and
p < 0.05, else ``no change``. A side with fewer than 5 samples has no interval (a bootstrap of 2
or 3 samples is narrow by construction, and the rank test of 2 against 2 cannot reach p < 0.05)
and its verdict is ``unknown (n<5)``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.results import latest, read_records

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
COLUMNS = (
    "workload",
    "model",
    "impl",
    "dtype",
    "params",
    "median A",
    "median B",
    "ratio",
    "95% interval",
    "p",
    "verdict",
)
MIN_SAMPLES = 5  # a side's samples below which no interval is drawn
ALPHA = 0.05  # the rank test's level a change must also pass
SLOWER, FASTER, NO_CHANGE = "slower", "faster", "no change"
UNKNOWN = f"unknown (n<{MIN_SAMPLES})"
NO_INTERVAL = "no interval"
VERSIONS = ("torch", "jax", "triton")


# --- reading ---------------------------------------------------------------------------------


def read(path: str | Path) -> tuple[list[dict], list[str]]:
    """The records of one file and the problems of its damaged lines. A missing file, a folder,
    or a file with no records at all (not JSON lines) raise ValueError with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a records file (results/DEVICE/SUITE.jsonl)")
    try:
        records, problems = read_records(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not records:
        why = problems[0].split(": ", 1)[-1].removesuffix("; skipped") if problems else "empty"
        raise ValueError(f"{path}: no records in it, not a JSON-lines records file ({why})")
    return records, problems


def points(records: list[dict]) -> dict[str, dict]:
    """The newest record of each key (results.latest), leaving out records with no params."""
    return {k: r for k, r in latest(records).items() if r.get("params")}


# --- statistics ------------------------------------------------------------------------------


def samples(rec: dict) -> np.ndarray:
    """The stored timing samples (ms) of a record; empty when it kept none."""
    s = (rec.get("timing") or {}).get("samples_ms") or []
    return np.asarray([x for x in s if x is not None], dtype=float)


def median_ms(rec: dict) -> float | None:
    """Median of the samples, else the record's timing.median_ms."""
    s = samples(rec)
    if len(s):
        return float(np.median(s))
    m = (rec.get("timing") or {}).get("median_ms")
    return None if m is None else float(m)


def bootstrap_ratio(
    a, b, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float] | None:
    """A percentile-bootstrap interval of median(b) / median(a): each side resampled with
    replacement, the same seed every call (the same samples give the same interval). None when a
    side has fewer than MIN_SAMPLES samples."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return None
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(len(a), len(b)))  # bounded memory for long sample lists
    for lo in range(0, resamples, chunk):
        n = min(chunk, resamples - lo)
        med_a = np.median(a[rng.integers(0, len(a), (n, len(a)))], axis=1)
        med_b = np.median(b[rng.integers(0, len(b), (n, len(b)))], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[lo : lo + n] = med_b / med_a
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def _ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks from 1, ties given their mean rank, and the size of each group of ties."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    _, start, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    mean_rank = start + (counts + 1) / 2.0  # ranks start..start+count-1 shifted by one
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks, counts


def mann_whitney_p(a, b) -> float | None:
    """Two-sided Mann-Whitney U p-value: the normal approximation with the tie correction and a
    continuity correction (as scipy.stats.mannwhitneyu(method="asymptotic")). None when a side
    has fewer than 2 samples."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return None
    n = n1 + n2
    ranks, ties = _ranks(np.concatenate([a, b]))
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    tie_term = float((ties.astype(float) ** 3 - ties).sum()) / (n * (n - 1))
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every sample equal: no evidence of a difference
        return 1.0
    z = max(abs(u - mu) - 0.5, 0.0) / math.sqrt(var)
    return min(1.0, math.erfc(z / math.sqrt(2.0)))


def verdict(interval: tuple[float, float] | None, p: float | None = None) -> str:
    """slower / faster when the interval excludes 1 and the rank test agrees (p < ALPHA)."""
    if interval is None:
        return UNKNOWN
    if p is not None and p >= ALPHA:
        return NO_CHANGE
    if interval[0] > 1:
        return SLOWER
    if interval[1] < 1:
        return FASTER
    return NO_CHANGE


# --- the comparison --------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    workload: str
    model: str | None
    impl: str | None
    dtype: str | None
    params: str
    median_a_ms: float | None
    median_b_ms: float | None
    n_a: int
    n_b: int
    ratio: float | None
    interval: tuple[float, float] | None
    p: float | None
    verdict: str


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)  # labels of points only in A
    only_b: list[str] = field(default_factory=list)
    not_ok: list[tuple[str, str, str]] = field(default_factory=list)  # (label, status A, B)
    differences: list[str] = field(default_factory=list)  # device / version lines
    problems: list[str] = field(default_factory=list)  # damaged lines read past

    @property
    def any_slower(self) -> bool:
        return any(r.verdict == SLOWER for r in self.rows)


def params_text(rec: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in (rec.get("params") or {}).items() if v is not None)


def label(rec: dict) -> str:
    """A point in words: workload model impl dtype params."""
    parts = (rec.get("workload"), rec.get("model"), rec.get("impl"), rec.get("dtype"))
    return " ".join([*(str(p) for p in parts if p), params_text(rec)]).strip()


def _sort_key(rec: dict) -> tuple:
    head = [str(rec.get(k) or "") for k in ("workload", "model", "dtype")]
    return (*head, params_text(rec), str(rec.get("impl") or ""))


def _env_values(recs: list[dict]) -> dict[str, list[str]]:
    """Per field (device, torch, jax, triton), the values the records carry, in first-seen
    order; a record without the field counts as "not recorded"."""
    out: dict[str, list[str]] = {f: [] for f in ("device", *VERSIONS)}
    for r in recs:
        env = r.get("env") or {}
        gpu = env.get("gpu") or {}
        versions = env.get("versions") or {}
        values = {"device": gpu.get("name") or env.get("device")}
        values.update({v: versions.get(v) for v in VERSIONS})
        for f, v in values.items():
            v = "not recorded" if v is None else str(v)
            if v not in out[f]:
                out[f].append(v)
    return out


def differences(recs_a: list[dict], recs_b: list[dict]) -> list[str]:
    """One line per environment field (GPU / device name, torch, jax, triton version) in which
    the two sets of records differ."""
    va, vb = _env_values(recs_a), _env_values(recs_b)
    lines = []
    for f in va:
        if set(va[f]) != set(vb[f]):
            what = "device" if f == "device" else f"{f} version"
            a, b = " / ".join(va[f]) or "none", " / ".join(vb[f]) or "none"
            lines.append(f"{what} differs: A {a}, B {b}")
    return lines


def compare_point(ra: dict, rb: dict, resamples: int = RESAMPLES, seed: int = SEED) -> Row:
    sa, sb = samples(ra), samples(rb)
    ma, mb = median_ms(ra), median_ms(rb)
    ratio = mb / ma if ma and mb is not None else None
    interval = bootstrap_ratio(sa, sb, resamples, seed) if ratio is not None else None
    return Row(
        key=ra["key"],
        workload=ra.get("workload"),
        model=ra.get("model"),
        impl=ra.get("impl"),
        dtype=ra.get("dtype"),
        params=params_text(ra),
        median_a_ms=ma,
        median_b_ms=mb,
        n_a=len(sa),
        n_b=len(sb),
        ratio=ratio,
        interval=interval,
        p=(p := mann_whitney_p(sa, sb)),
        verdict=verdict(interval, p),
    )


def compare(
    records_a: list[dict], records_b: list[dict], resamples: int = RESAMPLES, seed: int = SEED
) -> Comparison:
    """Compare two lists of records point by point (B against A)."""
    pa, pb = points(records_a), points(records_b)
    out = Comparison()
    out.differences = differences(list(pa.values()), list(pb.values()))
    shared = sorted(set(pa) & set(pb), key=lambda k: _sort_key(pa[k]))
    out.only_a = [label(pa[k]) for k in sorted(set(pa) - set(pb), key=lambda k: _sort_key(pa[k]))]
    out.only_b = [label(pb[k]) for k in sorted(set(pb) - set(pa), key=lambda k: _sort_key(pb[k]))]
    for k in shared:
        ra, rb = pa[k], pb[k]
        if ra["status"] != "ok" or rb["status"] != "ok":
            out.not_ok.append((label(ra), ra["status"], rb["status"]))
            continue
        out.rows.append(compare_point(ra, rb, resamples, seed))
    return out


def compare_files(a: str | Path, b: str | Path, **kw) -> Comparison:
    """Read both files (ValueError for bad input) and compare them."""
    (ra, prob_a), (rb, prob_b) = read(a), read(b)
    out = compare(ra, rb, **kw)
    out.problems = prob_a + prob_b
    return out


# --- output ----------------------------------------------------------------------------------


def _num(x: float | None, spec: str = ".4g") -> str:
    return "" if x is None else format(x, spec)


def _interval_text(r: Row) -> str:
    return NO_INTERVAL if r.interval is None else f"[{r.interval[0]:.3f}, {r.interval[1]:.3f}]"


def _p_text(p: float | None) -> str:
    if p is None:
        return ""
    return "<1e-6" if p < 1e-6 else format(p, ".2g")


def cells(r: Row) -> list[str]:
    """A row as the table and the HTML page print it (the columns of COLUMNS)."""
    return [
        r.workload or "",
        r.model or "",
        r.impl or "",
        r.dtype or "",
        r.params,
        _num(r.median_a_ms),
        _num(r.median_b_ms),
        _num(r.ratio, ".3f"),
        _interval_text(r),
        _p_text(r.p),
        r.verdict,
    ]


def _short(labels: list[str], most: int = 5) -> str:
    more = f"; ... and {len(labels) - most} more" if len(labels) > most else ""
    return "; ".join(labels[:most]) + more


def notes(c: Comparison) -> list[str]:
    """The lines around the table: what could not be compared, and why."""
    lines = []
    if c.only_a or c.only_b:
        lines.append(
            ", ".join(
                f"only in {side}: {len(labs)}" + (f" ({_short(labs)})" if labs else "")
                for side, labs in (("A", c.only_a), ("B", c.only_b))
            )
        )
    for lab, sa, sb in c.not_ok:
        lines.append(f"not compared (status A {sa}, B {sb}): {lab}")
    return lines


def summary(c: Comparison) -> str:
    counts = {v: sum(r.verdict == v for r in c.rows) for v in (SLOWER, FASTER, NO_CHANGE, UNKNOWN)}
    return f"{len(c.rows)} points compared: " + ", ".join(f"{n} {v}" for v, n in counts.items())


def format_table(c: Comparison) -> str:
    lines = [f"warning: {d}" for d in c.differences]
    lines += [f"warning: {p}" for p in c.problems]
    if c.rows:
        table = [list(COLUMNS), *(cells(r) for r in c.rows)]
        widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
        for row in table:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    else:
        lines.append("no point is ok in both files")
    lines.append(summary(c))
    lines += notes(c)
    return "\n".join(lines)


def row_dict(r: Row) -> dict:
    d = asdict(r)
    d["interval"] = list(r.interval) if r.interval else None
    return d


def format_csv(c: Comparison) -> str:
    """One CSV row per compared point (the differences and notes go to stderr, see __main__)."""
    fields = []
    for f in dataclasses.fields(Row):
        fields += ["low", "high"] if f.name == "interval" else [f.name]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in c.rows:
        d = row_dict(r)
        low, high = d.pop("interval") or (None, None)
        w.writerow({**d, "low": low, "high": high})
    return buf.getvalue().rstrip("\n")


def format_json(c: Comparison) -> str:
    return json.dumps(
        {
            "differences": c.differences,
            "problems": c.problems,
            "rows": [row_dict(r) for r in c.rows],
            "only_a": c.only_a,
            "only_b": c.only_b,
            "not_ok": [{"point": lab, "status_a": a, "status_b": b} for lab, a, b in c.not_ok],
            "summary": summary(c),
        },
        indent=1,
    )


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}

_VERDICT_CLASS = {SLOWER: "verdict-fails", FASTER: "verdict-holds", UNKNOWN: "verdict-missing"}


def html_page(c: Comparison, name_a: str, name_b: str) -> str:
    """The comparison as an HTML page with the report's style (bench.report.page)."""
    from bench.report.page import STYLE, _esc

    title = f"griffin-bench compare: {name_a} vs {name_b}"
    parts = [
        f"<h1>{_esc(title)}</h1>",
        f"<p>A = {_esc(name_a)}, B = {_esc(name_b)}. Ratio = median B / median A (above 1: B "
        f"slower); the interval is a percentile bootstrap ({RESAMPLES} resamples of each side, "
        f"seed {SEED}), p a two-sided Mann-Whitney U test. A change is claimed only where the "
        "interval excludes 1; a side with fewer than 2 samples has no interval.</p>",
    ]
    if c.differences or c.problems:
        items = "".join(f"<li>{_esc(x)}</li>" for x in c.differences + c.problems)
        parts.append(f'<div class="problems"><b>Not like for like</b><ul>{items}</ul></div>')
    parts.append(f"<p>{_esc(summary(c))}</p>")
    if c.rows:
        head = "".join(f"<th>{_esc(h)}</th>" for h in COLUMNS)
        body = []
        for r in c.rows:
            tds = [f"<td>{_esc(v)}</td>" for v in cells(r)]
            cls = _VERDICT_CLASS.get(r.verdict)
            if cls:
                tds[-1] = f'<td class="{cls}">{_esc(r.verdict)}</td>'
            body.append("<tr>" + "".join(tds) + "</tr>")
        parts.append(f'<table id="compare"><tr>{head}</tr>{"".join(body)}</table>')
    else:
        parts.append('<p class="no-data">No point is ok in both files.</p>')
    extra = notes(c)
    if extra:
        parts.append('<ul class="note">' + "".join(f"<li>{_esc(x)}</li>" for x in extra) + "</ul>")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>" + "".join(parts) + "</body></html>"
    )


def write_html(c: Comparison, path: str | Path, name_a: str, name_b: str) -> Path:
    page, path = html_page(c, name_a, name_b), Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot write the page ({exc.strerror or exc})") from None
    return path
