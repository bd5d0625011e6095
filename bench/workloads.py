"""The paper's workloads. Each one declares its parameters, its inputs, its work (FLOPs, bytes,
tokens), the output its correctness gate compares, and how it is measured:

- prefill      latency of processing a prompt (cache built, last-position logits)
- decode       time to sample `steps` tokens after a prefill of `prompt` at a batch (paper Fig. 4)
- train_step   forward + backward + AdamW at fixed tokens per batch vs length (paper Fig. 3)
- throughput   tokens/s at the largest batch that fits for a generation length (paper Fig. 1b)
"""

from __future__ import annotations

import dataclasses
import weakref
import zlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from bench import analytic
from bench.timing import Timing, TimingConfig
from models.config import ATTENTION, ModelConfig


@dataclass
class Measurement:
    timing: Timing | None
    work: dict
    memory: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    params: dict | None = None  # the parameters actually used, when the search chose them
    timer: str | None = None  # how the timing was taken, when not the backend's timer's way


def input_seed(gate_key: str) -> int:
    return zlib.crc32(gate_key.encode())


def random_tokens(cfg: ModelConfig, batch: int, t: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, t), dtype=np.int64)


def positions(batch: int, start: int, length: int) -> np.ndarray:
    return np.tile(np.arange(start, start + length, dtype=np.int64), (batch, 1))


class Workload:
    name: str
    description = ""
    kind = "model"  # "model" (a preset runs it) or "kernel" (an op on tensors)
    required: tuple[str, ...] = ()
    defaults: ClassVar[dict] = {}

    def gate_params(self, cfg: ModelConfig | None, p: dict) -> dict:
        """The parameters that decide the gate's inputs and reference outputs (all of them,
        unless a workload shares references between points)."""
        return p

    def seed_params(self, cfg: ModelConfig | None, p: dict) -> dict:
        """The parameters that seed the point's inputs (the gate's, by default)."""
        return self.gate_params(cfg, p)

    def normalize(self, params: dict) -> dict:
        """Validate parameter names and values; fill defaults."""
        valid = (*self.required, *self.defaults)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(
                f"workload {self.name!r} has no parameter(s) {unknown}; valid: {', '.join(valid)}"
            )
        missing = [k for k in self.required if k not in params]
        if missing:
            raise ValueError(f"workload {self.name!r} needs parameter(s) {missing}")
        out = {**self.defaults, **params}
        for k, v in out.items():
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(
                    f"workload {self.name!r}: {k} must be a positive integer, got {v!r}"
                )
        return out


def _prefill_inputs(handle, cfg, batch, prompt, seed):
    tokens = random_tokens(cfg, batch, prompt, seed)
    be = handle.backend
    return be.tokens(tokens), be.tokens(positions(batch, 0, prompt))


class Prefill(Workload):
    name = "prefill"
    description = "latency of processing a prompt (cache built, last-position logits)"
    required = ("prompt",)
    defaults: ClassVar[dict] = {"batch": 1}

    def gate(self, handle, cfg, p, seed):
        tokens, pos = _prefill_inputs(handle, cfg, p["batch"], p["prompt"], seed)
        return {"logits": handle.backend.to_numpy(handle.prefill(tokens, pos)[0])}

    def measure(self, handle, cfg, p, dtype, seed, tcfg: TimingConfig) -> Measurement:
        b, t = p["batch"], p["prompt"]
        tokens, pos = _prefill_inputs(handle, cfg, b, t, seed)
        timing = handle.backend.timer().measure(lambda: handle.prefill(tokens, pos), cfg=tcfg)
        _, cache = handle.prefill(tokens, pos)
        memory = {
            "cache_bytes": handle.cache_nbytes(cache),
            "cache_bytes_analytic": analytic.cache_bytes(cfg, b, t, dtype),
            "cache_length": t,
        }
        work = {
            "flops": analytic.forward_flops(cfg, b, 0, t, 1),
            "bytes": analytic.weight_bytes(cfg, dtype) + analytic.cache_bytes(cfg, b, t, dtype),
            "tokens": b * t,
        }
        return Measurement(timing, work, memory)


# Decode steps the correctness gate of a generation compares after the prompt, and across the
# local-attention window where the generation goes past it (gate_plan).
GATE_STEPS = 4
# the most tokens (prompt + generated) a generation point may ask for
MAX_TOKENS = 1 << 20


def gate_plan(cfg: ModelConfig, prompt: int, steps: int) -> tuple[tuple[int, int], ...]:
    """The decode steps the gate of a generation of `steps` tokens after a prompt of `prompt`
    compares, as phases (first step, steps): the first GATE_STEPS steps after the prompt; and,
    where the generation reaches past the local-attention window, GATE_STEPS steps across it.
    Step i runs at stream position prompt + i; a local-attention ring first drops a key at
    position `window` (a ring of `window` slots) or `window + 1` (window + 1 slots): the
    second phase runs positions window - 1 .. window + 2, after a prefill of the prompt and the
    token stream up to it (prefill and decode agree on a cache: the model tests' rule), so
    the gate costs a few steps however long the generation."""
    first = (0, min(steps, GATE_STEPS))
    window = cfg.attention_window if ATTENTION in cfg.block_types else None
    if window is None or not prompt <= window < prompt + steps - 1:
        return (first,)
    cross = window - 1 - prompt  # the step at position window - 1
    if cross <= first[1]:  # the first phase runs into it: one phase across the window
        return ((0, min(steps, cross + GATE_STEPS)),)
    return (first, (cross, min(GATE_STEPS, steps - cross)))


def teacher_forced(handle, cfg, batch, prompt, steps, seed) -> dict:
    """The correctness gate of a generation: a seeded prompt, then a seeded token stream (not
    the model's own picks, so every implementation sees the same inputs however its argmax
    breaks a near-tie) for gate_plan's phases, each decoded on a cache sized for the whole
    generation, as the timed run has. Returns {"prefill": logits, "step<i>": logits}."""
    be = handle.backend
    phases = gate_plan(cfg, prompt, steps)
    end = phases[-1][0] + phases[-1][1]
    tokens = random_tokens(cfg, batch, prompt, seed)
    stream = random_tokens(cfg, batch, end, seed + 1)
    out = {}
    for start, n in phases:
        known = np.concatenate([tokens, stream[:, :start]], axis=1)
        logits, cache = handle.prefill(
            be.tokens(known), be.tokens(positions(batch, 0, known.shape[1]))
        )
        if start == 0:
            out["prefill"] = be.to_numpy(logits)
            be.argmax_next(logits)  # compiled here once, outside any timed region
        cache = handle.fresh(cache, steps - start)
        for i in range(start, start + n):
            logits, cache = handle.decode(
                be.tokens(stream[:, i : i + 1]), be.tokens(positions(batch, prompt + i, 1)), cache
            )
            out[f"step{i}"] = be.to_numpy(logits)
        del cache
    return out


class _Generation:
    """prefill(prompt), then `steps` greedy decode steps, everything staying on the device."""

    def __init__(self, handle, cfg, batch, prompt, steps, seed):
        be = handle.backend
        self.handle, self.batch, self.steps = handle, batch, steps
        tokens, pos = _prefill_inputs(handle, cfg, batch, prompt, seed)
        logits, self.cache0 = handle.prefill(tokens, pos)
        self.first = be.argmax_next(logits)
        self.pos = [be.tokens(positions(batch, prompt + i, 1)) for i in range(steps)]

    def fresh(self):
        """A cache to generate from, with room for the whole generation."""
        return (self.handle.fresh(self.cache0, self.steps),)

    def run(self, cache, steps: int | None = None, mark=None):
        """Greedy steps from `cache`; `mark(i, token)` after the i-th step (the timer's mark)."""
        token, handle, argmax = self.first, self.handle, self.handle.backend.argmax_next
        for i, pos in enumerate(self.pos[:steps], start=1):
            logits, cache = handle.decode(token, pos, cache)
            token = argmax(logits)
            if mark is not None:
                mark(i, token)
        return token

    def warm(self, steps: int = 2):
        """A few steps on a cache of the generation's size (compiling, capturing, warming)."""
        self.handle.backend.sync(self.run(*self.fresh(), steps=min(steps, self.steps)))


def _generation_work(cfg, batch, prompt, steps, dtype) -> dict:
    weights = analytic.weight_bytes(cfg, dtype)
    lengths = range(prompt, prompt + steps)
    return {
        "flops": sum(analytic.forward_flops(cfg, batch, k, 1, 1) for k in lengths),
        "bytes": float(sum(weights + analytic.cache_bytes(cfg, batch, k, dtype) for k in lengths)),
        "tokens": batch * steps,
    }


@dataclass
class _Timed:
    """A generation timed with marks: its times to each mark, and what a reader needs."""

    key: tuple
    batch: int
    steps: int
    timings: dict  # {mark (steps done): Timing}
    cache_nbytes: int
    extra: dict = field(default_factory=dict)  # what the timing workload wants to remember


class _TimedGenerations:
    """The last generation each handle timed (one per handle, in this worker process): a later
    point of the same handle asking for a length at one of its marks, under the same key (batch,
    prompt, seed, timing), reads its time there instead of generating again. Handles are held
    weakly: a handle's entry goes with it."""

    def __init__(self):
        self._last = weakref.WeakKeyDictionary()

    def last(self, handle, key: tuple) -> _Timed | None:
        """The handle's last timed generation under this key, whatever its marks."""
        t = self._last.get(handle)
        return t if t is not None and t.key == key else None

    def get(self, handle, key: tuple, steps: int) -> _Timed | None:
        """The last generation, where its time to `steps` is that of a generation of `steps`:
        a mark of it, and (for a handle whose decode reads the whole reserved cache) its own
        length."""
        t = self.last(handle, key)
        if t is None or steps not in t.timings:
            return None
        if steps != t.steps and getattr(handle, "reads_reserve", False):
            return None
        return t

    def time(self, handle, gen: _Generation, key: tuple, tcfg: TimingConfig, **extra) -> _Timed:
        """Times `gen` (already warm) with a mark at every power of two below its length (none
        for a handle that `reads_reserve`: only its own length can be read from it)."""
        n = gen.steps
        marks = {1 << i for i in range(n.bit_length()) if 1 << i < n} | {n}
        if getattr(handle, "reads_reserve", False):
            marks = {n}
        timings = handle.backend.timer().measure_marked(
            lambda cache, mark: gen.run(cache, mark=mark), marks, setup=gen.fresh, cfg=tcfg
        )
        t = _Timed(key, gen.batch, n, timings, handle.cache_nbytes(gen.cache0), extra)
        self._last[handle] = t
        return t


def _check_length(name: str, p: dict, steps_field: str) -> None:
    total = p["prompt"] + p[steps_field]
    if total > MAX_TOKENS:
        raise ValueError(
            f"workload {name!r}: prompt + {steps_field} = {total} tokens; at most {MAX_TOKENS}"
        )


class Decode(Workload):
    name = "decode"
    description = "time to sample `steps` tokens after a prefill of `prompt` (paper Fig. 4)"
    required = ("prompt", "steps")
    defaults: ClassVar[dict] = {"batch": 16}

    def __init__(self):
        self._timed = _TimedGenerations()

    def normalize(self, params: dict) -> dict:
        p = super().normalize(params)
        _check_length(self.name, p, "steps")
        return p

    def gate_params(self, cfg: ModelConfig, p: dict) -> dict:
        """The parameters that decide the gate's inputs and reference outputs: points that
        differ only in how many steps they time past the gate's share one reference."""
        *_, (start, n) = gate_plan(cfg, p["prompt"], p["steps"])
        return {"batch": p["batch"], "prompt": p["prompt"], "gate_steps": start + n}

    def seed_params(self, cfg: ModelConfig, p: dict) -> dict:
        return {"batch": p["batch"], "prompt": p["prompt"]}

    def gate(self, handle, cfg, p, seed):
        return teacher_forced(handle, cfg, p["batch"], p["prompt"], p["steps"], seed)

    def measure(self, handle, cfg, p, dtype, seed, tcfg: TimingConfig) -> Measurement:
        """Times a generation of `steps` with a mark at every power of two below it: a later
        point of the same handle, batch and prompt asking for one of those lengths takes its
        time from that generation's first steps (the suites list steps longest first), so a
        sweep over lengths costs one generation per prompt; `extra.timed_within_steps` says so.
        """
        b, k, n = p["batch"], p["prompt"], p["steps"]
        key = (b, k, seed, dataclasses.astuple(tcfg))
        timed = self._timed.get(handle, key, n)
        if timed is None:
            gen = _Generation(handle, cfg, b, k, n, seed)
            gen.warm()
            timed = self._timed.time(handle, gen, key, tcfg)
            del gen
        timing = timed.timings[n]
        memory = {
            "cache_bytes": timed.cache_nbytes,
            "cache_bytes_analytic": analytic.cache_bytes(cfg, b, k, dtype),
            "cache_length": k,
        }
        extra = {"per_step_ms": timing.median_ms / n, "timed_within_steps": timed.steps}
        return Measurement(timing, _generation_work(cfg, b, k, n, dtype), memory, extra)


class TrainStep(Workload):
    name = "train_step"
    description = "forward + backward + AdamW at fixed tokens per batch (paper Fig. 3)"
    required = ("seq_len",)
    # checkpoint = 1: activation checkpointing (each residual block, or repeat of the block
    # pattern, recomputed in the backward pass), for the models whose activations do not fit
    defaults: ClassVar[dict] = {"batch": None, "tokens_per_batch": None, "checkpoint": None}

    def normalize(self, params: dict) -> dict:
        p = super().normalize(params)
        if p["checkpoint"] not in (None, 1):
            raise ValueError(
                f"workload 'train_step': checkpoint must be 1 (activation checkpointing on) or "
                f"left out (off), got {p['checkpoint']!r}"
            )
        if (p["batch"] is None) == (p["tokens_per_batch"] is None):
            raise ValueError("workload 'train_step' needs exactly one of batch, tokens_per_batch")
        if p["batch"] is None:
            if p["tokens_per_batch"] % p["seq_len"]:
                raise ValueError(
                    f"train_step: tokens_per_batch {p['tokens_per_batch']} is not a multiple of "
                    f"seq_len {p['seq_len']}"
                )
            p["batch"] = p["tokens_per_batch"] // p["seq_len"]
        return p

    def gate_params(self, cfg: ModelConfig | None, p: dict) -> dict:
        """Checkpointing changes how the step keeps activations, not the model's outputs."""
        return {k: v for k, v in p.items() if k != "checkpoint"}

    def _inputs(self, handle, cfg, p, seed):
        b, t = p["batch"], p["seq_len"]
        tokens = random_tokens(cfg, b, t + 1, seed)
        be = handle.backend
        return be.tokens(tokens[:, :-1]), be.tokens(positions(b, 0, t)), be.tokens(tokens[:, 1:])

    def gate(self, handle, cfg, p, seed):
        tokens, pos, _ = self._inputs(handle, cfg, p, seed)
        return {"logits": handle.backend.to_numpy(handle.prefill(tokens, pos)[0])}

    def measure(self, handle, cfg, p, dtype, seed, tcfg: TimingConfig) -> Measurement:
        need = analytic.train_state_bytes(cfg, dtype)
        have = handle.backend.device_memory_bytes()
        if have is not None and need > have:  # recorded as `oom`, with the reason
            raise MemoryError(
                f"needs several GPUs: training {cfg.name} in {dtype} holds {need / 1e9:.1f} GB "
                f"of weights, gradients and AdamW moments before any activation; this device "
                f"has {have / 1e9:.1f} GB"
            )
        tokens, pos, targets = self._inputs(handle, cfg, p, seed)
        step, restore = handle.train_step(checkpoint=p["checkpoint"] == 1)
        try:
            losses = []
            timing = handle.backend.timer().measure(
                lambda: losses.append(step(tokens, pos, targets)) or losses[-1], cfg=tcfg
            )
            last_loss = float(handle.backend.to_numpy(losses[-1]))
        finally:
            restore()
        if not np.isfinite(last_loss):
            raise FloatingPointError(f"training loss is {last_loss}")
        b, t = p["batch"], p["seq_len"]
        work = {
            "flops": analytic.train_flops(cfg, b, t),
            "bytes": analytic.train_weight_bytes(cfg, dtype),
            "tokens": b * t,
        }
        return Measurement(timing, work, extra={"last_loss": last_loss})


# share of the free device memory the throughput search plans to fill (the rest: allocator
# fragmentation, compiled kernels' workspaces, CUDA graph pools)
MEMORY_MARGIN = 0.9
PROBE_STEPS = 2  # decode steps a probe runs on a cache of the whole generation's size
THROUGHPUT_GATE_BATCH = 4  # the gate's batch: above 1, so the batched decode path is checked


def sequence_bytes(cfg: ModelConfig, length: int, dtype: str) -> int:
    """Device memory one sequence of a generation of `length` tokens holds: its decode state
    twice (the prefilled cache the timed runs restart from, and the copy being decoded) and a
    step's activations (float32 logits over the vocabulary, a few width-sized vectors)."""
    state = analytic.cache_bytes(cfg, 1, length, dtype)
    acts = 4 * (3 * cfg.vocab_size + 4 * (cfg.width + cfg.mlp_width + cfg.lru_width))
    return 2 * state + acts


class Throughput(Workload):
    name = "throughput"
    description = "tokens/s at the largest batch that fits for a generation (paper Fig. 1b)"
    required = ("gen_len",)
    defaults: ClassVar[dict] = {"prompt": 1, "max_batch": 1024}

    def __init__(self):
        self._timed = _TimedGenerations()

    def normalize(self, params: dict) -> dict:
        p = super().normalize(params)
        _check_length(self.name, p, "gen_len")
        return p

    def _gate_batch(self, p: dict) -> int:
        return min(p["max_batch"], THROUGHPUT_GATE_BATCH)

    def gate_params(self, cfg: ModelConfig, p: dict) -> dict:
        *_, (start, n) = gate_plan(cfg, p["prompt"], p["gen_len"])
        return {"batch": self._gate_batch(p), "prompt": p["prompt"], "gate_steps": start + n}

    def seed_params(self, cfg: ModelConfig, p: dict) -> dict:
        """Lengths share their inputs, so a shorter one can be read inside a longer one."""
        return {"prompt": p["prompt"], "max_batch": p["max_batch"]}

    def gate(self, handle, cfg, p, seed):
        return teacher_forced(handle, cfg, self._gate_batch(p), p["prompt"], p["gen_len"], seed)

    def batch_bound(self, handle, cfg, p, dtype) -> tuple[int, str]:
        """The largest batch the free memory should hold (analytic), and what limits it."""
        free = handle.backend.free_memory_bytes()
        if free is None:
            return p["max_batch"], "max_batch"
        per_seq = sequence_bytes(cfg, p["prompt"] + p["gen_len"], dtype)
        fit = int(free * MEMORY_MARGIN // per_seq)
        if fit >= p["max_batch"]:
            return p["max_batch"], "max_batch"
        return max(fit, 1), "memory"

    def measure(self, handle, cfg, p, dtype, seed, tcfg: TimingConfig) -> Measurement:
        """Start at the analytic bound; a probe builds the generation at a batch (the decode state
        at full length) and runs PROBE_STEPS steps. Halve until a probe fits, bisect up to the
        last batch that did not (resolution: 1/8 of the batch); then time the whole generation
        at the batch found, `min_reps` times (the probe warmed it), with a mark at every power of
        two below its length.

        A shorter length (suites list them longest first) whose point finds the same batch reads
        its time at that mark (`extra.timed_within_steps`) unless the handle's decode reads its
        whole reserved cache (`reads_reserve`: then it times its own generation), and one after
        a longer length held at `max_batch` skips the search (a shorter generation needs less
        memory: `extra.batch_from_gen_len`)."""
        be = handle.backend
        k, n = p["prompt"], p["gen_len"]
        key = (k, p["max_batch"], seed, dataclasses.astuple(tcfg))
        timing = TimingConfig(warmup=0, min_reps=tcfg.min_reps)  # the probe warmed it

        def timed_at(batch: int, limited_by: str, gen=None) -> _Timed:
            """The longer generation's time to n where it serves, else a generation's own."""
            t = self._timed.get(handle, key, n)
            if t is not None and t.batch == batch:
                return t
            if gen is None or gen.batch != batch:
                gen = None
                be.free()
                gen = _Generation(handle, cfg, batch, k, n, seed)
                gen.warm(PROBE_STEPS)
            return self._timed.time(handle, gen, key, timing, limited_by=limited_by)

        longer = self._timed.last(handle, key)
        if longer is not None and longer.steps >= n and longer.extra["limited_by"] == "max_batch":
            search = {
                "batch_bound": p["max_batch"],
                "probes": [],
                "batch_from_gen_len": longer.steps,
            }
            timed = timed_at(longer.batch, "max_batch")
            return self._measurement(cfg, p, dtype, timed, "max_batch", search)
        probes: list[dict] = []
        gen = None

        def fits(batch: int) -> bool:
            nonlocal gen
            gen = None
            be.free()
            try:
                candidate = _Generation(handle, cfg, batch, k, n, seed)
                candidate.warm(PROBE_STEPS)
            except Exception as exc:
                if not be.is_oom(exc):
                    raise
                del exc
                candidate = None
                probes.append({"batch": batch, "status": "oom"})
                be.free()
                return False
            probes.append({"batch": batch, "status": "ok"})
            gen = candidate
            return True

        bound, limited_by = self.batch_bound(handle, cfg, p, dtype)
        lo, hi = 0, None
        batch = bound
        while not fits(batch):
            hi = batch
            if batch == 1:
                raise MemoryError(
                    f"even batch 1 does not fit: a generation of {k} + {n} tokens of {cfg.name} "
                    f"in {dtype} (the search's probes: {probes})"
                )
            batch = max(1, batch // 2)
        lo = batch
        if hi is not None:
            limited_by = "memory"
            while hi - lo > max(1, lo // 8):
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        timed = timed_at(lo, limited_by, gen)
        gen = None
        search = {"batch_bound": bound, "probes": probes}
        return self._measurement(cfg, p, dtype, timed, limited_by, search)

    def _measurement(self, cfg, p, dtype, timed: _Timed, limited_by, search) -> Measurement:
        k, n, batch = p["prompt"], p["gen_len"], timed.batch
        memory = {
            "cache_bytes": timed.cache_nbytes,
            "cache_bytes_analytic": analytic.cache_bytes(cfg, batch, k, dtype),
            "cache_length": k,
        }
        extra = {
            "batch": batch,
            "limited_by": limited_by,
            **search,
            "timed_within_steps": timed.steps,
        }
        return Measurement(
            timed.timings[n], _generation_work(cfg, batch, k, n, dtype), memory, extra
        )


from bench.kernel_workloads import KERNEL_WORKLOADS  # noqa: E402  (they subclass Workload)

WORKLOADS: dict[str, Workload] = {
    w.name: w for w in (Prefill(), Decode(), TrainStep(), Throughput(), *KERNEL_WORKLOADS)
}


def workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid workloads: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def derive(m: Measurement, ceilings: dict | None) -> dict:
    """tokens/s, TFLOP/s, GB/s and their fractions of the measured ceilings (MFU, MBU)."""
    if m.timing is None:
        return {}
    s = m.timing.median_ms * 1e-3
    out = {"tokens_per_s": m.work["tokens"] / s}
    if m.work.get("flops"):
        out["tflops"] = m.work["flops"] / s / 1e12
        if ceilings and ceilings.get("matmul_tflops"):
            out["mfu"] = out["tflops"] / ceilings["matmul_tflops"]
    if m.work.get("bytes"):
        out["gbps"] = m.work["bytes"] / s / 1e9
        if ceilings and ceilings.get("copy_gbps"):
            out["mbu"] = out["gbps"] / ceilings["copy_gbps"]
    return out
