"""Runs a suite: case x implementation -> availability -> correctness gate -> timing -> record.

Order of work: the ceilings (copy bandwidth, matmul rate) first; then, per (model, dtype), the
reference outputs of the correctness gate, then each implementation's points (training last, since
it updates weights). Each job runs in a fresh worker process unless isolation is off; a worker that
dies (crash, CUDA fault, kill) costs only the point it was on, recorded as `error`, and a new
worker takes the rest. Points already in the records file are skipped, so a rerun resumes;
`rerun="failed"` measures again the points whose newest record is not `ok`, `rerun="all"` every
point of the (filtered) suite. A new record is appended: the newest record of a key wins for
every reader, the older ones stay in the file. One run at a time holds a records file (a lock
beside it, `OUT.lock`, removed at the end).
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import catalog
from bench.results import RecordWriter, latest_status, recorded_keys
from bench.suite import Point, Suite
from bench.worker import MARK, base_record, run_job

_ORDER = {"prefill": 0, "decode": 1, "throughput": 2, "train_step": 3}
# a worker that reports nothing for this long is killed (its point recorded as an error)
POINT_TIMEOUT_S = 900.0
TIMED_OUT = -(10**6)  # _execute's code for a worker killed by the timeout (no signal has it)
RERUN = ("failed", "all")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: what was recorded stays recorded; the message says how much."""

    def __init__(self, out: Path, recorded: int):
        super().__init__(
            f"interrupted: {recorded} point(s) recorded in {out} by this run; rerun the same "
            "command to resume"
        )
        self.recorded = recorded


class _Lock:
    """An exclusive lock on a records file for the run (OUT.lock, holding the holder's pid and
    start time); a second run on the same file stops with one line naming the holder."""

    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".lock")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            self.f.seek(0)
            holder = self.f.read().strip() or "another process"
            self.f.close()
            raise ValueError(
                f"{self.path.with_suffix('')} is being written by another run ({holder}); wait "
                "for it to finish or pass another --out"
            ) from None
        self.f.seek(0)
        self.f.truncate()
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.f.write(f"pid {os.getpid()} since {now}")
        self.f.flush()
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.f.close()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Progress:
    """One line per finished point on stderr, with the elapsed time and an ETA."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.enabled = total, 0, enabled
        self.t0 = time.perf_counter()

    def point(self, label: str, status: str, median: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        ms = "" if median == "-" else f" {float(median):.4g} ms"
        print(
            f"[{self.done:>{len(str(self.total))}}/{self.total} {100 * self.done / self.total:3.0f}%"
            f" {_hms(elapsed)} ETA {_hms(eta)}] {label}: {status}{ms}",
            file=sys.stderr,
            flush=True,
        )

    def job(self, job: dict, wall_s: float, first_s: float | None) -> None:
        """Where a suite's time goes beyond its points: one line per worker job, with its wall
        time (process start, imports and builds included) and the time to its first result."""
        points = job.get("points") or []
        what = job["kind"]
        if points:
            p = points[0]
            what += f" {p['model']} {p['dtype']}"
        if job.get("impl"):
            what += f" {job['impl']['name']}"
        first = "" if first_s is None else f", first result after {first_s:.1f} s"
        self.note(f"  job {what}: {wall_s:.1f} s{first}")

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def kind_of(p: Point) -> str:
    """The kind of catalog entry ("kernel" or "model") that runs the point's workload."""
    from bench.workloads import workload

    return workload(p.workload).kind


def _point_dict(p: Point) -> dict:
    return {**dataclasses.asdict(p), "params": [list(kv) for kv in p.params]}


def _groups(points: list[Point]) -> list[tuple[str, str, list[Point]]]:
    """[(model, dtype, points of that model+dtype)], in suite order."""
    out: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        out.setdefault((p.model, p.dtype), []).append(p)
    return [(m, d, ps) for (m, d), ps in out.items()]


def run(
    suite: Suite,
    out: Path,
    device: str | None = None,
    *,
    isolate: bool = True,
    progress: bool = True,
    point_timeout: float = POINT_TIMEOUT_S,
    rerun: str | None = None,
) -> dict:
    """Run the suite's points not yet in `out` (a JSONL file; `rerun`: see the module doc).
    Returns a small summary; raises Interrupted on Ctrl-C.

    An isolated worker that reports nothing for `point_timeout` seconds (a build or a kernel
    that hangs) is killed; its current point is recorded as an error and the sweep goes on."""
    if rerun is not None and rerun not in RERUN:
        raise ValueError(f"rerun={rerun!r}; valid values: None, {', '.join(map(repr, RERUN))}")
    if not point_timeout > 0:
        raise ValueError(
            f"--point-timeout must be a positive number of seconds, got {point_timeout:g}"
        )
    device = device or default_device()
    out = Path(out)
    with _Lock(out):
        return _run(suite, out, device, isolate, progress, point_timeout, rerun)


def todo_points(
    suite: Suite, out: Path, rerun: str | None = None, status: dict | None = None
) -> list[Point]:
    """The points a run measures: those not yet recorded; with rerun="failed" also those whose
    newest record is not `ok`; with rerun="all" every point. `status`: latest_status(out)."""
    status = latest_status(out) if status is None else status
    if rerun == "all":
        return list(suite.points)
    if rerun == "failed":
        return [p for p in suite.points if status.get(p.key) != "ok"]
    return [p for p in suite.points if p.key not in status]


def _run(suite, out, device, isolate, progress, point_timeout, rerun) -> dict:
    RecordWriter(out)  # creates the folder, repairs a torn last line
    status = latest_status(out)
    todo = todo_points(suite, out, rerun, status)
    prog = Progress(len(todo), progress)
    run_id = (
        f"{suite.name}-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    )
    summary = {"run_id": run_id, "skipped": len(suite.points) - len(todo), "points": len(todo)}
    if not todo:
        prog.note(
            f"{suite.name}: all {len(suite.points)} points already recorded in {out} "
            "(--retry measures again those not ok, --force all)"
        )
        return summary
    again = sum(1 for p in todo if p.key in status)
    prog.note(
        f"{suite.name}: {len(todo)} points on {device} -> {out}"
        + (f" ({summary['skipped']} already recorded)" if summary["skipped"] else "")
        + (f" ({again} of them measured again)" if again else "")
    )
    base = {"device": device, "out": str(out), "run_id": run_id, "suite": suite.name}
    base["timing"] = dataclasses.asdict(suite.timing)
    gate_dir = tempfile.mkdtemp(prefix="griffin-bench-gate-")
    labels = {p.key: p.label() for p in todo}
    try:
        _sweep(base, todo, isolate, prog, labels, out, point_timeout, gate_dir)
    except KeyboardInterrupt:
        raise Interrupted(out, len(recorded_keys(out, run_id))) from None
    finally:
        shutil.rmtree(gate_dir, ignore_errors=True)
    return summary


def _sweep(base, todo, isolate, prog, labels, out, point_timeout, gate_dir) -> None:
    """The ceilings; then per (model, dtype) the gate's references, each implementation's points."""
    ceilings = {}

    def on_ceilings(values):
        ceilings.update(values)

    _execute({**base, "kind": "ceilings"}, isolate, prog, labels, point_timeout, on_ceilings)
    base["ceilings"] = ceilings or None
    for _, _, points in _groups(todo):
        gates = list({p.gate_key: p for p in points}.values())
        _execute(
            {
                **base,
                "kind": "reference",
                "gate_dir": gate_dir,
                "points": [_point_dict(p) for p in gates],
            },
            isolate,
            prog,
            labels,
            point_timeout,
        )
        for impl in catalog.IMPLEMENTATIONS:  # a name may be a model and a kernel entry
            mine = sorted(
                (p for p in points if p.impl == impl.name and kind_of(p) == impl.kind),
                key=lambda p: _ORDER.get(p.workload, 0),
            )
            if mine:
                job = {
                    **base,
                    "kind": "measure",
                    "gate_dir": gate_dir,
                    "impl": dataclasses.asdict(impl),
                }
                _run_group(job, mine, isolate, prog, labels, out, point_timeout)


def _run_group(job, points, isolate, prog, labels, out: Path, point_timeout: float) -> None:
    """Measure a group; when its worker dies, record the point it was on and go on."""
    remaining = list(points)
    while remaining:
        code = _execute(
            {**job, "points": [_point_dict(p) for p in remaining]},
            isolate,
            prog,
            labels,
            point_timeout,
        )
        have = recorded_keys(out, job["run_id"])
        left = [p for p in remaining if p.key not in have]
        if code == 0 or not left:
            return
        if code != 86:  # the worker died on left[0]: record it, restart for the rest
            crashed = left.pop(0)
            RecordWriter(out).append(_crash_record(job, crashed, code, point_timeout))
            prog.point(crashed.label(), "error", "-")
        remaining = left


def _crash_record(job: dict, p: Point, code: int, point_timeout: float) -> dict:
    if code == TIMED_OUT:
        error = (
            f"no result within {point_timeout:g} s: the worker was killed (a build or a run that "
            "hangs; raise the limit with --point-timeout)"
        )
    else:
        how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        error = f"the worker process died on this point ({how})"
    rec = base_record(job, p, job["impl"], None)
    rec.update(
        status="error",
        error=error,
        time=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    return rec


def _execute(
    job: dict, isolate: bool, prog: Progress, labels: dict, point_timeout: float, on_ceilings=None
) -> int:
    """Run one job in a worker process; its exit code, or TIMED_OUT when it was killed after
    `point_timeout` seconds without a result."""

    started, first = time.monotonic(), []

    def emit(kind, *fields):
        first or first.append(time.monotonic() - started)
        if kind == "done":
            key, status, median = fields
            prog.point(labels.get(key, key), status, median)
        elif kind == "ceilings" and on_ceilings:
            on_ceilings(json.loads(fields[0]))

    if not isolate:
        code = run_job(job, emit)
        prog.job(job, time.monotonic() - started, first[0] if first else None)
        return code
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if job["device"] == "cpu":
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.setdefault("TRITON_INTERPRET", "1")  # Triton kernels on the CPU: correct, slow
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdin.write(json.dumps({**job, "parent_pid": os.getpid()}))
    proc.stdin.close()
    last = [time.monotonic()]
    timed_out = threading.Event()

    def watchdog():
        while proc.poll() is None:
            if time.monotonic() - last[0] > point_timeout:
                timed_out.set()
                proc.kill()
                return
            time.sleep(min(1.0, point_timeout / 10))

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        for line in proc.stdout:
            if line.startswith(MARK):
                last[0] = time.monotonic()
                emit(*line.rstrip("\n").split("\t")[1:])
    except KeyboardInterrupt:  # the worker got the same SIGINT: make sure it is gone
        proc.kill()
        proc.wait()
        raise
    code = proc.wait()
    prog.job(job, time.monotonic() - started, first[0] if first else None)
    return TIMED_OUT if timed_out.is_set() else code
