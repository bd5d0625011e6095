"""The kernel-speed regression gate: cases, device keys, baselines and the check.

    nox -s regress                        # measure (pytest-benchmark), compare, fail on a slowdown
    nox -s regress -- --save-baseline     # measure and store this device's baseline
    python -m bench.regress check RUN.json [--threshold 0.10] [--save-baseline]
    python -m bench.regress fresh [--device h200]   # kernel records measured after their code

The measurements are pytest-benchmark runs of tests/regress/test_speed.py: every case is a kernel
implementation of the catalog (the same adapters the `kernels` suite times) on one shape, each
round synchronised (a GPU's queue drained before the clock stops; on a GPU a torch case's round is
one CUDA-graph replay, see capture_round), warm-up rounds apart, the median kept. The check then
applies two rules:

1. Against this device's stored baseline (results/baselines/DEVICE_KEY.json, keyed by GPU name,
   driver and library versions). The baseline keeps every case's samples (per-call seconds of
   each round); where both sides have at least 5, a case fails when the bootstrap 95% interval
   of the ratio of medians (bench.compare) lies wholly above 1 + MIN_EFFECT and the rank test
   agrees (Mann-Whitney p < 0.05): a slowdown beyond the run's own noise and larger than the
   drift seen between reruns. Against a baseline of medians only (saved before samples were
   kept), a median grown by more than `threshold` fails. The message names the case, both
   medians, the ratio and (with samples) its interval and p.
2. Ratios measured in the same run, which hold on any machine: each of our kernels against its
   `_ref` twin and against the fastest peer. On a GPU the limits are the speed-ups we rely on. On
   the CPU our kernels run in Triton's interpreter, 10^2..10^5 times slower than the native code
   they would be compared with, so only the ratio of two interpreted paths is held to a limit
   there: fused vs unfused RG-LRU fwd+bwd, 0.578-0.603 in ten runs on one CPU and 0.79 on
   another, limit 1.0 (the fused kernel no slower than the unfused path it replaces), which a 2x
   slowdown of the fused kernel (1.16-1.6) crosses; the others are printed, not gated.

Beside the check, `python -m bench.regress fresh` (run first by `nox -s regress`): the committed
kernel records of GATED_DEVICE were measured at or after the last change to their kernels' files
(fresh_kernel_records).

Refresh a baseline deliberately (`--save-baseline`) after a change that is meant to alter speed,
or on a new device/driver/library version (a new key starts without a baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "results" / "baselines"
THRESHOLD = 0.10  # the allowed slowdown against a baseline of medians only
# With samples on both sides: the smallest slowdown the gate claims (the interval's lower bound
# must clear it). Reruns of one commit on one H100 moved medians by up to 3.3% (graph-timed,
# docs/h100.md); a planted 10% slowdown (GRIFFIN_BENCH_INJECT_SLOWDOWN=CASE:1.1) must fail.
MIN_EFFECT = 0.05


@dataclasses.dataclass(frozen=True)
class Case:
    op: str  # scan | rglru | conv1d, or decode (a model's decode step)
    impl: str  # a kernel implementation of bench.catalog
    backward: int  # 0: forward, 1: forward + backward

    @property
    def id(self) -> str:
        return f"{self.op}-{'fwdbwd' if self.backward else 'fwd'}-{self.impl}"


# the shape of each form: the GPU's is the kernels suite's; the CPU's runs in the interpreter
SHAPES = {
    "cuda": {"batch": 8, "seq_len": 2048, "width": 2560, "dtype": "bfloat16"},
    "cpu": {"batch": 2, "seq_len": 48, "width": 40, "dtype": "float32"},
}
# rounds per case (the torch loops take ~0.1-1 s per call at the GPU shape)
ROUNDS = {"cuda": (30, 3), "cpu": (5, 20)}  # (kernels, loops)
# calls per round of a kernel case, one sync after the last: on the GPU a 0.1 ms kernel timed
# call by call measures the launch and the sync as much as the kernel (the first H100 runs saw
# 0.17-0.23 ms medians of a 0.11 ms kernel); ten queued calls keep the GPU busy between them
CALLS_PER_ROUND = {"cuda": 10, "cpu": 1}

CASES = [
    *(Case(op, impl, bw) for op in ("scan", "rglru", "conv1d") for impl in ("ours-triton", "ours-torch-loop") for bw in (0, 1)),
    *(Case("scan", peer, bw) for peer in ("recurrentgemma-jax-associative", "fla-chunk") for bw in (0, 1)),
    *(Case("rglru", "torch-unfused-rglru", bw) for bw in (0, 1)),
]  # fmt: skip

# The decode step of a model (one token after a prefill), reference vs optimized model.
DECODE_SHAPES = {
    "cuda": {"model": "griffin-400m", "batch": 1, "prompt": 512, "dtype": "bfloat16"},
    "cpu": {"model": "griffin-tiny", "batch": 1, "prompt": 16, "dtype": "float32"},
}
DECODE_CASES = [
    Case("decode", impl, 0) for impl in ("ours-torch-reference", "ours-torch-optimized")
]

# On the CPU our kernels run in Triton's interpreter, 10^2..10^5 times slower than the native
# code they are compared with there (ten CPU runs: 377-13,070x): no limit a regression would
# cross, so those ratios are printed, not gated, on the CPU (None). The fused-vs-unfused RG-LRU
# ratio compares two interpreted paths (0.578-0.603 in the same ten runs, 0.79 on another CPU)
# and keeps a limit, 1.0, that a planted 2x slowdown of the fused kernel crosses
# (tests/test_regress.py plants one).
CPU_LIMIT = None
# (numerator, denominator(s): the fastest of them, max ratio on a GPU, max ratio on the CPU)
RATIOS = [
    *(
        (f"{op}-{m}-ours-triton", [f"{op}-{m}-ours-torch-loop"], limit, CPU_LIMIT)
        for op, limit in (("scan", 0.05), ("rglru", 0.05), ("conv1d", 0.3))
        for m in ("fwd", "fwdbwd")
    ),  # the Conv1D _ref is 4 shifted multiply-adds, not a loop over time: ~8x, not ~300x
    ("scan-fwd-ours-triton", ["scan-fwd-recurrentgemma-jax-associative", "scan-fwd-fla-chunk"], 0.45, CPU_LIMIT),
    ("scan-fwdbwd-ours-triton", ["scan-fwdbwd-recurrentgemma-jax-associative", "scan-fwdbwd-fla-chunk"], 0.45, CPU_LIMIT),
    ("rglru-fwdbwd-ours-triton", ["rglru-fwdbwd-torch-unfused-rglru"], 0.2, 1.0),
    ("decode-fwd-ours-torch-optimized", ["decode-fwd-ours-torch-reference"], 0.5, CPU_LIMIT),
]  # fmt: skip


def form(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def device_key(device: str) -> str:
    """GPU name + driver + torch / triton / jax versions (the CPU model on the CPU)."""
    from bench import env

    versions = env.versions()
    libs = "-".join(
        f"{k}{versions[k]}" for k in ("torch", "triton", "jax") if versions.get(k)
    )  # fmt: skip
    if form(device) == "cuda":
        gpu = env.gpu_static() or {}
        head = f"{gpu.get('name', 'gpu')}-driver{gpu.get('driver', 'unknown')}"
    else:
        head = "cpu-" + (env.collect("cpu").get("cpu") or "unknown")
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", f"{head}-{libs}").strip("_")


def medians(bench_json: dict) -> dict[str, float]:
    """case id -> median seconds per call, from a pytest-benchmark JSON file's benchmarks."""
    out = {}
    for b in bench_json.get("benchmarks", []):
        info = b.get("extra_info") or {}
        case = info.get("case") or b["name"]
        out[case] = float(b["stats"]["median"]) / int(info.get("calls_per_round", 1))
    return out


def samples(bench_json: dict) -> dict[str, list[float]]:
    """case id -> per-call seconds of every round, where the run kept them (pytest-benchmark's
    `--benchmark-save-data`, as `nox -s regress` runs it)."""
    out = {}
    for b in bench_json.get("benchmarks", []):
        info = b.get("extra_info") or {}
        data = (b.get("stats") or {}).get("data")
        if data:
            calls = int(info.get("calls_per_round", 1))
            out[info.get("case") or b["name"]] = [float(x) / calls for x in data]
    return out


def slowdown(new: list[float], base: list[float]) -> tuple[float, tuple | None, float | None]:
    """(ratio of medians new/base, its bootstrap 95% interval or None, Mann-Whitney p or None):
    the statistics of `python -m bench compare`, on a case's samples."""
    import statistics

    from bench import compare

    ratio = statistics.median(new) / statistics.median(base)
    return ratio, compare.bootstrap_ratio(base, new), compare.mann_whitney_p(base, new)


def timers(bench_json: dict) -> dict[str, str]:
    """case id -> the timer its rounds used ("cuda-graph" | "eager"), where the run recorded it."""
    out = {}
    for b in bench_json.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if info.get("timer"):
            out[info.get("case") or b["name"]] = info["timer"]
    return out


def timer_for(case_id: str, device: str) -> str | None:
    """How a kernel case's rounds are timed ("cuda-graph" or "eager"; None for a case not in
    CASES): on a GPU the torch cases replay a CUDA graph of the round (see capture_round), except
    the _ref loops, host-bound by design; JAX cases (one XLA executable per call) and everything
    on the CPU run eagerly, call by call."""
    case = next((c for c in CASES if c.id == case_id), None)
    if case is None:
        return None
    if form(device) != "cuda" or "loop" in case.impl:
        return "eager"
    from bench import catalog

    impl = catalog.implementation(case.impl, kind="kernel")
    return "cuda-graph" if impl.backend == "torch" else "eager"


def capture_round(fn, calls: int, warmup: int = 3, sync: bool = True):
    """`calls` calls of `fn` captured as one CUDA graph; returns a function that replays it and
    (with `sync`) waits for the GPU. Raises whatever the capture raises (after waiting for the
    GPU again).

    Why: a torch fwd+bwd call goes through torch.autograd.grad (Python, the autograd engine,
    allocations), and when the host's speed dips the GPU idles between kernels. On the H100 at
    2e5132b (docs/h100.md, measurement lessons) the scan fwd+bwd medians of three
    consecutive runs on one machine were 0.45 / 0.55 / 0.37 ms, with interquartile ranges as wide
    as 0.457-0.625 ms within a run, while the forward-only cases repeated within 3.5% (Conv1D's 13%). A replayed
    graph launches the same kernels with no host work between them.

    The standard pattern: warm-up calls on a side stream (Triton's compilation and autotuning,
    the allocator's first blocks), then the capture; the outputs and autograd's buffers come from
    the graph's private pool, so the inputs must stay the same tensors (no per-round setup).
    """
    import torch

    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        torch.cuda.synchronize()
    except Exception:
        with contextlib.suppress(Exception):  # leave the device idle for the eager fallback
            torch.cuda.synchronize()
        raise

    def replay():
        graph.replay()
        if sync:
            torch.cuda.synchronize()

    return replay


def round_target(fn, calls: int, sync, timer: str, capture=capture_round):
    """(target, timer used, capture error or None): the function pytest-benchmark times for one
    round of `calls` calls of `fn`. "cuda-graph": a replay of the captured round; when the capture
    raises (a peer that cannot be captured), the eager round instead, with the error. "eager":
    the calls queued one by one, one `sync` after the last."""

    def eager(*args):
        for _ in range(calls - 1):
            fn(*args)
        sync(fn(*args))

    if timer != "cuda-graph":
        return eager, "eager", None
    try:
        return capture(fn, calls), "cuda-graph", None
    except Exception as e:
        return eager, "eager", f"{type(e).__name__}: {e}"[:500]


def planted_calls(case_id: str, calls: int, plant: str | None) -> int:
    """Calls a round of `case_id` runs under GRIFFIN_BENCH_INJECT_SLOWDOWN=`plant`
    ("CASE_ID" or "CASE_ID:FACTOR", FACTOR > 1, default 2): round(calls * FACTOR) for the named
    case, `calls` for every other. The round's time is still divided by `calls`."""
    if not plant:
        return calls
    name, _, factor = plant.partition(":")
    if name != case_id:
        return calls
    try:
        f = float(factor or 2)
    except ValueError:
        f = 0.0
    planted = round(calls * f) if f > 1 else calls
    if planted <= calls:
        raise ValueError(
            f"GRIFFIN_BENCH_INJECT_SLOWDOWN={plant}: FACTOR must be a number > 1 that adds a "
            f"call to a round of {calls} (valid: >= {(calls + 0.5) / calls:.2f})"
        )
    return planted


def host_bound(case: str) -> bool:
    """Cases whose time is the host's Python speed, not the device's: our _ref loops (one small
    launch per step) and the eager reference decode. On the H100 their medians moved 1.3-1.75x
    between consecutive runs on one machine (and 0.58x the other way); they serve as the
    denominators of same-run ratios, and are not held to a baseline."""
    return case.endswith("-ours-torch-loop") or case == "decode-fwd-ours-torch-reference"


def check(
    run: dict[str, float],
    baseline: dict[str, float] | None,
    device: str,
    threshold: float = THRESHOLD,
    key: str = "",
    timers: dict[str, str] | None = None,
    baseline_timers: dict[str, str] | None = None,
    run_samples: dict[str, list[float]] | None = None,
    baseline_samples: dict[str, list[float]] | None = None,
    min_effect: float = MIN_EFFECT,
) -> tuple[list[str], list[str]]:
    """(failures, notes): slowdowns against the baseline and same-run ratio violations. `timers`
    (case -> timer used, see `timers()`) marks a case timed otherwise than planned (timer_for):
    a torch case whose CUDA-graph capture failed on a GPU, timed eagerly. A case timed otherwise
    than its baseline (`baseline_timers`; "eager" where a baseline recorded none) is not compared:
    a graph replay and eager calls measure different things, so the baseline must be re-saved.
    Where `run_samples` and `baseline_samples` both hold at least bench.compare.MIN_SAMPLES of
    a case, the statistics decide (module docstring, rule 1); else the median and `threshold`."""
    from bench import compare

    failures, notes = [], []

    def tag(case):
        used, planned = (timers or {}).get(case), timer_for(case, device)
        return f" [{used} timer, not {planned}]" if used and planned and used != planned else ""

    if baseline:
        for case, new in sorted(run.items()):
            base = baseline.get(case)
            if host_bound(case) and form(device) == "cuda":
                notes.append(f"{case}: host-bound, no baseline check ({new * 1e3:.4f} ms)")
                continue
            if base is None:
                notes.append(f"{case}: no baseline median on {key}{tag(case)}")
                continue
            used = (timers or {}).get(case, "eager")
            base_timer = (baseline_timers or {}).get(case, "eager")
            if used != base_timer:
                notes.append(
                    f"{case}: timed with the {used} timer, its baseline with the {base_timer} "
                    "timer: not compared (re-save the baseline, --save-baseline)"
                )
                continue
            ratio = new / base
            line = (
                f"{case}: median {new * 1e3:.4f} ms vs baseline {base * 1e3:.4f} ms on {key}: "
                f"{ratio:.2f}x"
            )
            a, b = (baseline_samples or {}).get(case, []), (run_samples or {}).get(case, [])
            stats = slowdown(b, a) if min(len(a), len(b)) >= compare.MIN_SAMPLES else None
            if stats is not None and stats[1] is not None and stats[2] is not None:
                ratio, interval, p = stats
                line += f" (95% interval {interval[0]:.3f}-{interval[1]:.3f}, p {p:.2g})"
                if interval[0] > 1 + min_effect and p < compare.ALPHA:
                    failures.append(
                        f"{line}, slower beyond its noise and by more than {min_effect:.0%}"
                        + tag(case)
                    )
                else:
                    notes.append(line + tag(case))
                continue
            if ratio > 1 + threshold:
                failures.append(
                    f"{line}, slower by more than the {threshold:.0%} threshold{tag(case)}"
                )
            else:
                notes.append(line + tag(case))
    else:
        notes.append(f"no baseline for {key}: only the same-run ratios are checked")
        notes += [
            f"{case}: median {run[case] * 1e3:.4f} ms{tag(case)}" for case in run if tag(case)
        ]
    column = 2 if form(device) == "cuda" else 3
    for rule in RATIOS:
        num, dens, limit = rule[0], rule[1], rule[column]
        have = [d for d in dens if d in run]
        if num not in run or not have:
            continue  # a case not measured here (e.g. a GPU-only peer on the CPU)
        den = min(have, key=lambda d: run[d])
        r = run[num] / run[den]
        if limit is None:
            notes.append(f"{num} / {den} = {r:.3f} (not gated here)")
            continue
        line = f"{num} / {den} = {r:.3f} (allowed <= {limit:g})"
        (failures if r > limit else notes).append(line)
    return failures, notes


def baseline_path(key: str, directory: Path = BASELINES) -> Path:
    return directory / f"{key}.json"


def load_baseline(key: str, directory: Path = BASELINES) -> dict[str, float] | None:
    path = baseline_path(key, directory)
    return json.loads(path.read_text())["medians_s"] if path.exists() else None


def load_baseline_samples(key: str, directory: Path = BASELINES) -> dict[str, list[float]]:
    """case -> per-call seconds of a stored baseline ({} for one saved with medians only)."""
    path = baseline_path(key, directory)
    return json.loads(path.read_text()).get("samples_s", {}) if path.exists() else {}


def load_baseline_timers(key: str, directory: Path = BASELINES) -> dict[str, str]:
    """case -> timer of a stored baseline ({} for a baseline saved before timers were recorded:
    its cases were all timed eagerly)."""
    path = baseline_path(key, directory)
    return json.loads(path.read_text()).get("timers", {}) if path.exists() else {}


def save_baseline(
    key: str,
    run: dict[str, float],
    directory: Path = BASELINES,
    timers: dict[str, str] | None = None,
    run_samples: dict[str, list[float]] | None = None,
) -> Path:
    from bench import env

    path = baseline_path(key, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "device_key": key,
        "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_sha": env.git_sha(),
        "medians_s": dict(sorted(run.items())),
        "timers": dict(sorted((timers or {}).items())),
        "samples_s": dict(sorted((run_samples or {}).items())),
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# The device whose committed kernel records must keep up with the kernel code: a change to a
# kernel's files lands only with records of that kernel measured at or after it.
GATED_DEVICE = "h200"
# each kernel op's own modules in kernels/ (fresh_kernel_records adds what they import there)
OP_MODULES = {
    "scan": ("scan", "scan_jax", "pallas"),
    "rglru": ("rglru", "rglru_jax", "pallas"),
    "conv1d": ("conv1d", "conv1d_jax"),
}


def kernel_sources(op: str, root: Path = ROOT) -> list[str]:
    """The files under kernels/ that an op's kernels run: its modules and, transitively, the
    kernels modules they import (e.g. kernels/_triton.py), as repository paths."""
    import ast

    todo, seen = list(OP_MODULES[op]), set()
    while todo:
        name = todo.pop()
        path = root / "kernels" / f"{name}.py"
        if name in seen or not path.exists():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("kernels."):
                    todo.append(node.module.split(".", 1)[1])
                elif node.module == "kernels":
                    todo += [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [
                    a.name.split(".", 1)[1] for a in node.names if a.name.startswith("kernels.")
                ]
    return sorted(f"kernels/{n}.py" for n in seen)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def fresh_kernel_records(root: Path = ROOT, device: str = GATED_DEVICE) -> tuple[list, list]:
    """(failures, notes): every kernel op recorded in results/DEVICE/kernels*.jsonl (the newest
    record of each point) must have been measured at a commit that contains the last change to
    that op's kernel files; a record of a commit outside this history, or of a tree with
    uncommitted changes, cannot vouch for the code and fails too."""
    from bench.results import latest, read_records

    failures, notes = [], []
    paths = sorted((root / "results" / device).glob("kernels*.jsonl"))
    if not paths:
        return [], [f"no {device} kernel records committed (results/{device}/kernels*.jsonl)"]
    if _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() != "false":
        return [], ["not a full git checkout: the records' commits cannot be checked"]
    for path in paths:
        rel = path.relative_to(root)
        records, problems = read_records(path)
        failures += problems  # a line the check cannot read vouches for nothing
        # a record without its commit (a crashed point's) takes its run's
        run_sha = {
            r["run_id"]: r["env"]["git_sha"] for r in records if (r.get("env") or {}).get("git_sha")
        }
        by_op: dict[str, dict[str, int]] = {}
        for rec in latest(records).values():
            op = str(rec.get("workload", "")).removeprefix("kernel_")
            if op in OP_MODULES:
                sha = (rec.get("env") or {}).get("git_sha") or run_sha.get(rec.get("run_id"))
                sha = sha or "unknown"
                by_op.setdefault(op, {}).setdefault(sha, 0)
                by_op[op][sha] += 1
        for op, shas in sorted(by_op.items()):
            files = kernel_sources(op, root)
            last = _git(root, "log", "-1", "--format=%H", "--", *files).stdout.strip()
            for sha, n in sorted(shas.items()):
                what = f"{rel}: {n} {op} record(s) of {sha[:12]}"
                if sha.endswith("-dirty") or sha == "unknown":
                    failures.append(f"{what}: not measured at a commit; measure them again")
                elif _git(root, "cat-file", "-e", f"{sha}^{{commit}}").returncode:
                    failures.append(f"{what}: that commit is not in this history")
                elif last and _git(root, "merge-base", "--is-ancestor", last, sha).returncode:
                    failures.append(
                        f"{what} predate {last[:12]}, the last change to {', '.join(files)}: "
                        f"measure them again on the {device.upper()} (python -m bench run "
                        f"{path.stem} --force --out results/{device})"
                    )
                else:
                    notes.append(f"{what}: at or after the last change to {op}'s kernels")
    return failures, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regress")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="compare a pytest-benchmark run with this device's baseline")
    p.add_argument("run", help="the --benchmark-json file of tests/regress")
    p.add_argument(
        "--threshold", type=float, default=THRESHOLD,
        help="allowed slowdown against a baseline of medians only (0.10)",
    )  # fmt: skip
    p.add_argument(
        "--min-effect", type=float, default=MIN_EFFECT,
        help="with samples: the slowdown the interval's lower bound must clear (0.05)",
    )  # fmt: skip
    p.add_argument("--save-baseline", action="store_true", help="store this run as the baseline")
    p.add_argument("--baselines", default=str(BASELINES), help="baseline folder")
    f = sub.add_parser(
        "fresh", help=f"the committed {GATED_DEVICE} kernel records: measured after their code?"
    )
    f.add_argument("--device", default=GATED_DEVICE, help="results/DEVICE to check")
    args = parser.parse_args(argv)
    if args.command == "fresh":
        failures, notes = fresh_kernel_records(ROOT, args.device)
        for line in notes:
            print("  ok   " + line)
        for line in failures:
            print("  FAIL " + line)
        print(f"{len(failures)} stale kernel record group(s) in results/{args.device}")
        return 1 if failures else 0
    doc = json.loads(Path(args.run).read_text())
    run = medians(doc)
    if not run:
        print(f"{args.run}: no benchmarks in this run", file=sys.stderr)
        return 2
    device = (doc.get("machine_info") or {}).get("griffin_device", "cpu")
    key = (doc.get("machine_info") or {}).get("griffin_device_key") or device_key(device)
    directory = Path(args.baselines)
    if args.save_baseline:
        saved = save_baseline(key, run, directory, timers(doc), samples(doc))
        print(f"baseline saved: {saved} ({len(run)} cases)")
        baseline = None
    else:
        baseline = load_baseline(key, directory)
    failures, notes = check(
        run,
        baseline,
        device,
        args.threshold,
        key,
        timers(doc),
        load_baseline_timers(key, directory),
        samples(doc),
        load_baseline_samples(key, directory),
        args.min_effect,
    )
    for line in notes:
        print("  ok   " + line)
    for line in failures:
        print("  FAIL " + line)
    print(f"{len(failures)} failure(s), {len(run)} cases, device key {key}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())


# The kernel bars of issue 4, checked on the committed GPU records (results/*/kernels.jsonl) by
# the tests: name -> (bar, committed floor). A bar the records meet must stay met; a bar not yet
# met must not fall below the number committed so far (its floor). The scan forward at T=16384
# sits on its bar: the same kernel measured 80.6% of copy at c064289 and 79.9% at d98945c, so
# its floor is the lower run's, rounded down.
KERNEL_BARS = {
    "scan fwd, fraction of copy, T=4096": (0.80, 0.76),
    "scan fwd, fraction of copy, T=16384": (0.80, 0.79),
    "scan fwd, x fastest peer, T=4096": (4.0, 3.7),
    "scan fwd, x fastest peer, T=16384": (4.0, 3.5),
    "scan fwd+bwd, x fastest peer, T=4096": (3.5, 3.5),
    "scan fwd+bwd, x fastest peer, T=16384": (3.5, 3.5),
    "rglru fwd, fraction of its floor, T=4096": (0.70, 0.59),
    "rglru fwd, fraction of its floor, T=16384": (0.70, 0.49),
    "rglru fwd+bwd, x unfused torch, T=4096": (5.0, 5.0),
    "rglru fwd+bwd, x unfused torch, T=16384": (5.0, 5.0),
}


def kernel_bar_values(records: list[dict]) -> dict[str, float]:
    """The numbers behind KERNEL_BARS from one kernels run's records (B=8, D=2560 points)."""
    ok = [r for r in records if r.get("status") == "ok" and r["workload"].startswith("kernel_")]
    by = {}
    for r in ok:
        p = r["params"]
        if p.get("batch") == 8 and p.get("width") == 2560:
            by[(r["workload"], p["seq_len"], p["backward"], r["impl"])] = r

    def ms(key):
        return by[key]["timing"]["median_ms"]

    def fastest_peer(op, t, bw):
        peers = [k for k in by if k[:3] == (op, t, bw) and by[k]["role"] == "peer"]
        return min(ms(k) for k in peers)

    out = {}
    for t in (4096, 16384):
        if ("kernel_scan", t, 0, "ours-triton") in by:
            out[f"scan fwd, fraction of copy, T={t}"] = by[("kernel_scan", t, 0, "ours-triton")][
                "metrics"
            ]["mbu"]
            out[f"scan fwd, x fastest peer, T={t}"] = fastest_peer("kernel_scan", t, 0) / ms(
                ("kernel_scan", t, 0, "ours-triton")
            )
        if ("kernel_scan", t, 1, "ours-triton") in by:
            out[f"scan fwd+bwd, x fastest peer, T={t}"] = fastest_peer("kernel_scan", t, 1) / ms(
                ("kernel_scan", t, 1, "ours-triton")
            )
        if ("kernel_rglru", t, 0, "ours-triton") in by:
            out[f"rglru fwd, fraction of its floor, T={t}"] = by[
                ("kernel_rglru", t, 0, "ours-triton")
            ]["metrics"]["mbu"]
        if ("kernel_rglru", t, 1, "ours-triton") in by and (
            "kernel_rglru",
            t,
            1,
            "torch-unfused-rglru",
        ) in by:
            out[f"rglru fwd+bwd, x unfused torch, T={t}"] = ms(
                ("kernel_rglru", t, 1, "torch-unfused-rglru")
            ) / ms(("kernel_rglru", t, 1, "ours-triton"))
    return out  # fmt: skip
