"""The Griffin paper's efficiency claims (De et al. 2024, Figs. 3, 4 and 1b), checked against records.

`verdicts(df)` takes the records DataFrame of `bench.report.data.load` and returns one row per
(claim, implementation, size, panel, family): the family's number and MQA's at the claim's point
(the longest sequence, generation or number of steps measured), their ratio, and "holds",
"does not hold" or "not measured". Pure (pandas in, pandas out): the report draws it under each
paper figure, and `bench show` can print it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

FAMILY_ORDER = ("mqa", "griffin", "hawk")
FAMILY_LABEL = {"mqa": "MQA", "griffin": "Griffin", "hawk": "Hawk"}
HOLDS, FAILS, MISSING = "holds", "does not hold", "not measured"


@dataclass(frozen=True)
class Claim:
    """One figure's claim: which records, which axis, which number, and the bound on the ratio
    family / MQA at the longest x."""

    figure: str  # the report's figure id
    title: str
    workload: str
    sentence: str
    x: str  # the axis the claim is read at the end of
    panel: tuple[str, ...]  # parameters that must match between a family and MQA
    value: str  # the column compared
    what: str  # the ratio's name in a verdict
    bound: str
    holds: Callable[[float], bool]
    needs: str  # the parameter that marks a paper record of this workload


CLAIMS = (
    Claim(
        "fig-train",
        "Fig. 3",
        "train_step",
        "Griffin and Hawk train about as fast as MQA at 2k, and as the sequence grows their "
        "step time relative to MQA's does not grow (local attention / recurrence: cost linear "
        "in length).",
        "seq_len",
        ("tokens_per_batch",),
        "median_ms",
        "MQA's step time",
        "≤ 1×",
        lambda r: operator.le(r, 1.0),
        "tokens_per_batch",
    ),
    Claim(
        "fig-decode",
        "Fig. 4",
        "decode",
        "Hawk and Griffin sample faster than MQA, and the gap grows with the number of tokens "
        "sampled and with the prefill.",
        "steps",
        ("prompt", "batch"),
        "median_ms",
        "MQA's latency",
        "< 1×",
        lambda r: operator.lt(r, 1.0),
        "steps",
    ),
    Claim(
        "fig-throughput",
        "Fig. 1b",
        "throughput",
        "Hawk and Griffin reach higher maximum throughput than MQA, and more so at longer "
        "generations.",
        "gen_len",
        ("prompt",),
        "tokens_per_s",
        "MQA's tokens/s",
        "> 1×",
        lambda r: operator.gt(r, 1.0),
        "gen_len",
    ),
)
BY_FIGURE = {c.figure: c for c in CLAIMS}

COLUMNS = (
    "figure",
    "impl",
    "dtype",
    "size",
    "panel",
    "family",
    "x",
    "value",
    "mqa_value",
    "ratio",
    "ratio_first",
    "bound",
    "verdict",
    "text",
)


def family_size(model: str) -> tuple[str, str]:
    """("griffin", "1b") for griffin-1b; the family from the preset's blocks (gemma-2b is MQA)."""
    from models.config import PRESETS, preset

    name, _, size = model.partition("-")
    family = preset(model).family if model in PRESETS else name
    return family, size or model


def paper_records(df: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """Every record (any status) of the claim's workload that carries its axis: one per key (the
    last one read wins, as in data.load), with family and size columns; a training step with
    activation checkpointing is a size of its own ("7b, checkpointed"), never compared with
    one without."""
    d = df[(df["workload"] == claim.workload) & df[claim.x].notna() & df[claim.needs].notna()]
    d = d.drop_duplicates(subset=["key"], keep="last")
    fs = [family_size(m) for m in d["model"]]
    sizes = [s for _, s in fs]
    if "checkpoint" in d:
        sizes = [
            f"{s}, checkpointed" if c == 1 else s
            for s, c in zip(sizes, d["checkpoint"], strict=True)
        ]
    return d.assign(family=[f for f, _ in fs], size=sizes)


def _label(name: str, value) -> str:
    return f"{int(value)} {name}" if name == "steps" else f"{name} {int(value)}"


def _by_how_much(ratio: float) -> str:
    if ratio == 1.0:
        return "level with MQA"
    return f"{abs(ratio - 1):.0%} {'below' if ratio < 1 else 'above'} MQA"


def _point(g: pd.DataFrame, claim: Claim, family: str, x) -> tuple[float | None, str]:
    """(the claim's value of `family` at `x`, or None with why)."""
    rows = g[(g["family"] == family) & (g[claim.x] == x)]
    ok = rows[(rows["status"] == "ok") & rows[claim.value].notna()]
    if len(ok):
        return float(ok[claim.value].iloc[-1]), ""
    if len(rows):
        r = rows.iloc[-1]
        return None, f"{r['model']} {r['status']}"
    return None, f"no {FAMILY_LABEL.get(family, family)} record"


def _rows(df: pd.DataFrame, claim: Claim) -> list[dict]:
    d = paper_records(df, claim)
    several_dtypes = d["dtype"].nunique() > 1
    rows = []
    keys = ["impl", "dtype", "size", *claim.panel]
    for key, g in d.groupby(keys, sort=False, dropna=False):
        impl, dtype, size, *panel = key
        panel_text = ", ".join(_label(n, v) for n, v in zip(claim.panel, panel, strict=True))
        x_last, x_first = g[claim.x].max(), g[claim.x].min()
        mqa, why_mqa = _point(g, claim, "mqa", x_last)
        mqa_first, _ = _point(g, claim, "mqa", x_first)
        for family in FAMILY_ORDER[1:]:
            name = FAMILY_LABEL[family]
            value, why = _point(g, claim, family, x_last)
            where = f"{name} {size}" + (f" {dtype}" if several_dtypes else "")
            where += f" at {_label(claim.x, x_last)}"
            if claim.panel == ("prompt", "batch"):  # decode: the prefill is the panel
                where += f" after a prefill of {int(panel[0])}"
            row = dict(
                figure=claim.figure,
                impl=impl,
                dtype=dtype,
                size=size,
                panel=panel_text,
                family=family,
                x=x_last,
                value=value,
                mqa_value=mqa,
                ratio=None,
                ratio_first=None,
                bound=claim.bound,
            )
            if value is None or mqa is None:
                reasons = "; ".join(r for r in (why, why_mqa) if r)
                row.update(verdict=MISSING, text=f"{where}: {MISSING} ({reasons})")
                rows.append(row)
                continue
            ratio = value / mqa
            first = ""
            if x_first != x_last:
                v_first, _ = _point(g, claim, family, x_first)
                if v_first is not None and mqa_first is not None:
                    row["ratio_first"] = v_first / mqa_first
                    first = f" (at {_label(claim.x, x_first)}: {row['ratio_first']:.2f}×)"
            verdict = HOLDS if claim.holds(ratio) else FAILS
            row.update(
                ratio=ratio,
                verdict=verdict,
                text=f"{where}: {ratio:.2f}× {claim.what}{first}; paper: {claim.bound}; "
                f"{verdict} ({_by_how_much(ratio)})",
            )
            rows.append(row)
    return rows


def verdicts(df: pd.DataFrame, figure: str | None = None) -> pd.DataFrame:
    """The verdict rows of every claim (or of one figure id: fig-train, fig-decode,
    fig-throughput) on the records in `df`; no rows for a claim without records."""
    claims = CLAIMS if figure is None else (BY_FIGURE[figure],)
    rows = [r for c in claims for r in _rows(df, c)]
    return pd.DataFrame(rows, columns=list(COLUMNS))
