"""Suites are TOML data files (bench/suites/*.toml). A suite is a list of cases; each case names a
workload, models, implementations and parameter sweeps; lists are swept (cartesian product).

    description = "..."
    dtype = "bfloat16"                  # default for every case
    [timing]                            # optional: TimingConfig fields
    budget_s = 1.0
    [[case]]                            # kernel workloads take no models
    workload = "decode"
    models = ["griffin-1b", "mqa-1b"]
    impls = ["ours-torch-reference", "recurrentgemma-torch"]   # default: every implementation
    batch = 16
    prompt = [1, 4096]
    steps = [128, 256, 512]
    [case.cpu]                          # overrides used on a machine without a GPU
    models = ["griffin-tiny"]
    prompt = [1, 16]
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench import catalog
from bench.timing import TimingConfig
from bench.workloads import workload
from models.config import PRESETS, preset

DTYPES = ("float32", "bfloat16", "float16")
KERNEL_MODEL = "-"  # the model field of kernel points
CASE_KEYS = ("workload", "models", "impls", "dtype", "cpu")


@dataclass(frozen=True)
class Point:
    workload: str
    model: str
    impl: str
    dtype: str
    params: tuple[tuple[str, int | None], ...]

    @property
    def param_dict(self) -> dict:
        return dict(self.params)

    @property
    def gate_key(self) -> str:
        """Identifies the inputs and reference outputs of the correctness gate: the workload's
        gate parameters (decode points of different lengths may share one), not the
        implementation."""
        cfg = None if self.model == KERNEL_MODEL else preset(self.model)
        gate = workload(self.workload).gate_params(cfg, self.param_dict)
        args = ",".join(f"{k}={v}" for k, v in gate.items() if v is not None)
        return f"{self.workload}|{self.model}|{self.dtype}|{args}"

    @property
    def input_key(self) -> str:
        """Seeds the point's inputs: the workload's seed parameters (decode points after the
        same prompt share their prompt, whatever their gate's length)."""
        cfg = None if self.model == KERNEL_MODEL else preset(self.model)
        params = workload(self.workload).seed_params(cfg, self.param_dict)
        args = ",".join(f"{k}={v}" for k, v in params.items() if v is not None)
        return f"{self.workload}|{self.model}|{self.dtype}|{args}"

    @property
    def key(self) -> str:
        """Identifies the point in a records file: a rerun skips recorded keys."""
        args = ",".join(f"{k}={v}" for k, v in self.params if v is not None)
        return f"{self.workload}|{self.model}|{self.dtype}|{args}|{self.impl}"

    def label(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.params if v is not None)
        model = "" if self.model == KERNEL_MODEL else f" {self.model}"
        return f"{self.workload}{model} {self.impl} {self.dtype} {args}"


@dataclass
class Suite:
    name: str
    description: str
    points: list[Point]
    timing: TimingConfig = field(default_factory=TimingConfig)


class SuiteError(ValueError):
    pass


TIMING_FIELDS = {  # name: (smallest value, what it is)
    "warmup": (0, "an integer >= 0"),
    "min_reps": (1, "an integer >= 1"),
    "max_reps": (1, "an integer >= 1"),
    "budget_s": (0, "a number of seconds >= 0"),
}


def _timing(where: str, table) -> TimingConfig:
    if not isinstance(table, dict):
        raise SuiteError(f"{where}: [timing] must be a table")
    unknown = sorted(set(table) - set(TIMING_FIELDS))
    if unknown:
        raise SuiteError(
            f"{where}: [timing]: unknown key(s) {unknown}; valid: {', '.join(TIMING_FIELDS)}"
        )
    for k, v in table.items():
        low, what = TIMING_FIELDS[k]
        number = (int, float) if k == "budget_s" else (int,)
        if isinstance(v, bool) or not isinstance(v, number) or v < low:
            raise SuiteError(f"{where}: [timing] {k} must be {what}, got {v!r}")
    timing = TimingConfig(**table)
    if timing.max_reps < timing.min_reps:
        raise SuiteError(
            f"{where}: [timing] max_reps ({timing.max_reps}) is below min_reps ({timing.min_reps})"
        )
    return timing


def load(name_or_path: str, device: str, impls=None, models=None) -> Suite:
    """Read and validate a suite; `device` "cpu" applies each case's [case.cpu] overrides.
    `impls` / `models` (lists of names) keep only those."""
    path = catalog.suite_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not a TOML file (not UTF-8 text)") from None
    for name in impls or ():
        catalog.implementation(name)
    for name in models or ():
        if name not in PRESETS:
            raise SuiteError(f"unknown model {name!r}; valid models: {', '.join(PRESETS)}")
    return parse(data, path, device, impls, models)


def parse(data: dict, path: Path, device: str, impls=None, models=None) -> Suite:
    where = str(path)
    unknown = sorted(set(data) - {"description", "dtype", "timing", "case"})
    if unknown:
        raise SuiteError(
            f"{where}: unknown top-level keys {unknown}; valid: description, dtype, timing, case"
        )
    cases = data.get("case")
    if not isinstance(cases, list) or not cases:
        raise SuiteError(f"{where}: a suite needs at least one [[case]] table")
    timing = _timing(where, data.get("timing", {}))
    default_dtype = data.get("dtype", "bfloat16")
    points: list[Point] = []
    for i, case in enumerate(cases, start=1):
        ctx = f"{where}: case {i}"
        if not isinstance(case, dict):
            raise SuiteError(f"{ctx}: must be a table")
        if device == "cpu" and isinstance(case.get("cpu"), dict):
            case = {**case, **case["cpu"]}
        if "workload" not in case:
            raise SuiteError(f"{ctx}: missing 'workload'")
        try:
            wl = workload(case["workload"])
        except ValueError as exc:
            raise SuiteError(f"{ctx}: {exc}") from None
        if wl.kind == "kernel":  # an op on tensors: no model
            if "models" in case:
                raise SuiteError(f"{ctx}: kernel workload {wl.name!r} takes no 'models'")
            case_models = [KERNEL_MODEL]
            fitting = [i.name for i in catalog.kernel_implementations(wl.op)]
        else:
            case_models = _names(case.get("models"), ctx, "models")
            for m in case_models:
                if m not in PRESETS:
                    raise SuiteError(
                        f"{ctx}: unknown model {m!r}; valid models: {', '.join(PRESETS)}"
                    )
            fitting = [i.name for i in catalog.model_implementations()]
        case_impls = _names(case.get("impls", fitting), ctx, "impls")
        for name in case_impls:
            try:
                catalog.implementation(name)
            except ValueError as exc:
                raise SuiteError(f"{ctx}: {exc}") from None
            if name not in fitting:
                raise SuiteError(
                    f"{ctx}: implementation {name!r} does not run workload {wl.name!r}; "
                    f"implementations that do: {', '.join(fitting)}"
                )
        dtype = case.get("dtype", default_dtype)
        if dtype not in DTYPES:
            raise SuiteError(f"{ctx}: unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
        sweep = {
            k: v if isinstance(v, list) else [v] for k, v in case.items() if k not in CASE_KEYS
        }
        for values in itertools.product(*sweep.values()):
            try:
                params = wl.normalize(dict(zip(sweep, values, strict=True)))
            except ValueError as exc:
                raise SuiteError(f"{ctx}: {exc}") from None
            for model in case_models:
                if models and model not in models:
                    continue
                for impl in case_impls:
                    if impls and impl not in impls:
                        continue
                    points.append(Point(wl.name, model, impl, dtype, tuple(sorted(params.items()))))
    seen, unique = set(), []
    for p in points:
        if p.key not in seen:
            seen.add(p.key)
            unique.append(p)
    return Suite(path.stem, data.get("description", ""), unique, timing)


def _names(value, ctx: str, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{ctx}: '{field}' must be a non-empty list of names")
    return value
