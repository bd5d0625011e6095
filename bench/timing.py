"""The ONE timer per backend.

- torch on a GPU: CUDA events around each repetition, one synchronisation after all of them;
- JAX: rounds of back-to-back calls, one `jax.block_until_ready` on the last call's outputs, a
  monotonic clock; a sample is a round's time over its calls. JAX has no device events, and a sync
  after every call would put the host's dispatch and round trip to the device into each sample
  (0.13-0.34 ms a call on the H100 machine: docs/h100.md), which torch's
  events and CUDA-graph replays leave out (the measurement rules: no host sync inside the timed
  region). Calls with a `setup` (run before each call, outside the timed region) are timed one
  at a time;
- CPU (torch): a monotonic clock.

`measure_marked` times a long call and its prefixes at once (a generation of N steps and its first
n steps, for each mark n): CUDA events recorded at each mark inside the timed region (no sync),
elsewhere a synchronisation and a clock reading at each mark (JAX has no device events: a few
marks in thousands of steps).

Every timer does the same thing: one first call (compilation, autotuning, caches: recorded apart as
`first_ms`), `warmup - 1` more untimed calls, then repetitions until the time budget is used (at
least `min_reps`, at most `max_reps`). `warmup = 0` makes no untimed call and times exactly
`min_reps` calls (for a call of seconds, a whole generation, that the workload warmed itself).
An optional `setup` runs before each repetition, outside the timed region (e.g. a fresh copy of
a cache that the timed call mutates). Times are milliseconds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TimingConfig:
    warmup: int = 2  # calls before timing, the first of them timed apart as first_ms; 0: none
    min_reps: int = 3
    max_reps: int = 100
    budget_s: float = 1.0  # time spent on timed repetitions, roughly


@dataclass
class Timing:
    samples_ms: list[float]
    first_ms: float | None  # None when there was no untimed first call (warmup 0)
    warmup: int
    calls_per_sample: int = 1  # back-to-back calls a sample averages (JAX rounds); 1 elsewhere

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    def quantile(self, q: float) -> float:
        s = sorted(self.samples_ms)
        pos = q * (len(s) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def summary(self) -> dict:
        return {
            "median_ms": self.median_ms,
            "p20_ms": self.quantile(0.2),
            "p80_ms": self.quantile(0.8),
            "min_ms": min(self.samples_ms),
            "reps": len(self.samples_ms),
            "first_ms": self.first_ms,
            "warmup": self.warmup,
            "calls_per_sample": self.calls_per_sample,
            "samples_ms": [round(x, 6) for x in self.samples_ms],
        }


class _Timer:
    kind = "monotonic"

    def sync(self, out) -> None:
        pass

    def measure(
        self, fn: Callable, setup: Callable | None = None, cfg: TimingConfig | None = None
    ) -> Timing:
        cfg = cfg or TimingConfig()
        first_ms, last_ms = self._warm(fn, setup, cfg.warmup)
        reps = self._reps(cfg, last_ms)
        calls = self.calls_per_sample(last_ms) if setup is None and cfg.warmup else 1
        if calls > 1:
            samples = self._rounds(fn, max(cfg.min_reps, math.ceil(reps / calls)), calls)
            return Timing(samples, first_ms, cfg.warmup, calls)
        return Timing(self._repeat(fn, setup, reps), first_ms, cfg.warmup)

    def measure_marked(
        self, fn: Callable, marks, setup: Callable | None = None, cfg: TimingConfig | None = None
    ) -> dict[int, Timing]:
        """`fn(*setup(), mark)` calls `mark(m, out)` when it has done `m` units of its work (for
        each m in marks, in order); returns, per mark, the times from the call's start to the
        mark: warm-up and repetitions as `measure` makes them, one call a sample."""
        cfg = cfg or TimingConfig()
        marks = set(marks)
        first_ms, last_ms = self._warm(lambda *a: fn(*a, lambda m, out: None), setup, cfg.warmup)
        reps = self._reps(cfg, last_ms)
        samples: dict[int, list[float]] = {m: [] for m in sorted(marks)}
        for _ in range(reps):
            args = setup() if setup else ()
            self.sync(args)
            for m, ms in self._marked_rep(fn, args, marks).items():
                samples[m].append(ms)
        missing = [m for m, s in samples.items() if len(s) != reps]
        if missing:
            raise RuntimeError(f"the timed call never reached mark(s) {missing}")
        return {m: Timing(s, first_ms, cfg.warmup) for m, s in samples.items()}

    def _warm(self, fn, setup, warmup: int) -> tuple[float | None, float | None]:
        """`warmup` untimed calls, each synced: (the first's time, the last's), None without."""
        first_ms = last_ms = None
        for _ in range(warmup):
            args = setup() if setup else ()
            self.sync(args)
            t0 = time.perf_counter()
            self.sync(fn(*args))
            last_ms = (time.perf_counter() - t0) * 1e3
            first_ms = last_ms if first_ms is None else first_ms
        return first_ms, last_ms

    @staticmethod
    def _reps(cfg: TimingConfig, last_ms: float | None) -> int:
        """Repetitions filling the budget (from the last warm-up call's time), at least
        min_reps, at most max_reps; exactly min_reps without a warm-up."""
        if last_ms is None:
            return cfg.min_reps
        return int(min(max(cfg.budget_s * 1e3 / max(last_ms, 1e-3), cfg.min_reps), cfg.max_reps))

    def _marked_rep(self, fn, args, marks: set) -> dict[int, float]:
        seen: dict[int, float] = {}

        def mark(m, out):  # fn may mark more often than asked: only the marks are synced
            if m in marks:
                self.sync(out)
                seen[m] = time.perf_counter()

        t0 = time.perf_counter()
        fn(*args, mark)
        return {m: (t - t0) * 1e3 for m, t in seen.items()}

    def calls_per_sample(self, call_ms: float) -> int:
        """Back-to-back calls a sample averages, given one synced call's time: 1 (every call
        its own sample) but for the JAX timer."""
        return 1

    def _rounds(self, fn, n: int, calls: int) -> list[float]:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            for _ in range(calls - 1):
                fn()
            self.sync(fn())
            samples.append((time.perf_counter() - t0) * 1e3 / calls)
        return samples

    def _repeat(self, fn, setup, reps: int) -> list[float]:
        samples = []
        for _ in range(reps):
            args = setup() if setup else ()
            self.sync(args)
            t0 = time.perf_counter()
            self.sync(fn(*args))
            samples.append((time.perf_counter() - t0) * 1e3)
        return samples


class CpuTimer(_Timer):
    """torch on the CPU: ops run synchronously, a monotonic clock times them."""


class JaxTimer(_Timer):
    """Rounds of back-to-back calls, each round's last outputs synced (see the module doc)."""

    kind = "block_until_ready_rounds"
    ROUND_MS = 10.0  # a round lasts about this long (the last synced call's time decides)
    MAX_CALLS = 100

    def calls_per_sample(self, call_ms: float) -> int:
        return max(1, min(self.MAX_CALLS, math.ceil(self.ROUND_MS / max(call_ms, 1e-3))))

    def sync(self, out) -> None:
        import jax

        jax.block_until_ready(out)


class CudaEventTimer(_Timer):
    """torch on a GPU: CUDA events on the current stream; no host sync inside the timed region."""

    kind = "cuda_events"

    def sync(self, out) -> None:
        import torch

        torch.cuda.synchronize()

    def _repeat(self, fn, setup, reps: int) -> list[float]:
        import torch

        events = []
        for _ in range(reps):
            args = setup() if setup else ()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]

    def _marked_rep(self, fn, args, marks: set) -> dict[int, float]:
        import torch

        seen: dict[int, torch.cuda.Event] = {}

        def mark(m, out):
            if m in marks:
                seen[m] = torch.cuda.Event(enable_timing=True)
                seen[m].record()

        start = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args, mark)
        torch.cuda.synchronize()
        return {m: start.elapsed_time(e) for m, e in seen.items()}
