"""The paper's workloads. Each one declares its parameters, its inputs, its work (FLOPs, bytes,
tokens), the output its correctness gate compares, and how it is measured:

- prefill      latency of processing a prompt (cache built, last-position logits)
- decode       time to sample `steps` tokens after a prefill of `prompt` at a batch (paper Fig. 4)
- train_step   forward + backward + AdamW at fixed tokens per batch vs length (paper Fig. 3)
- throughput   tokens/s at the largest batch that fits for a generation length (paper Fig. 1b)
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from bench import analytic
from bench.timing import Timing, TimingConfig
from models.config import ModelConfig


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
    kind = "model"  # "model" (a preset runs it) or "kernel" (an op on tensors)
    required: tuple[str, ...] = ()
    defaults: ClassVar[dict] = {}

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
    required = ("prompt",)
    defaults: ClassVar[dict] = {"batch": 1}

    def gate(self, handle, cfg, p, seed):
        tokens, pos = _prefill_inputs(handle, cfg, p["batch"], p["prompt"], seed)
        return handle.backend.to_numpy(handle.prefill(tokens, pos)[0])

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


class _Generation:
    """prefill(prompt), then `steps` greedy decode steps, everything staying on the device."""

    def __init__(self, handle, cfg, batch, prompt, steps, seed):
        be = handle.backend
        self.handle, self.steps = handle, steps
        tokens, pos = _prefill_inputs(handle, cfg, batch, prompt, seed)
        logits, self.cache0 = handle.prefill(tokens, pos)
        self.first = be.argmax_next(logits)
        self.pos = [be.tokens(positions(batch, prompt + i, 1)) for i in range(steps)]

    def run(self, cache):
        token, handle, argmax = self.first, self.handle, self.handle.backend.argmax_next
        for pos in self.pos:
            logits, cache = handle.decode(token, pos, cache)
            token = argmax(logits)
        return token


class Decode(Workload):
    name = "decode"
    required = ("prompt", "steps")
    defaults: ClassVar[dict] = {"batch": 16}

    def gate(self, handle, cfg, p, seed):
        gen = _Generation(handle, cfg, p["batch"], p["prompt"], 1, seed)
        logits, _ = handle.decode(gen.first, gen.pos[0], handle.fresh(gen.cache0))
        return handle.backend.to_numpy(logits)

    def measure(self, handle, cfg, p, dtype, seed, tcfg: TimingConfig) -> Measurement:
        b, k, n = p["batch"], p["prompt"], p["steps"]
        gen = _Generation(handle, cfg, b, k, n, seed)
        timing = handle.backend.timer().measure(
            gen.run, setup=lambda: (handle.fresh(gen.cache0),), cfg=tcfg
        )
        weights = analytic.weight_bytes(cfg, dtype)
        step_bytes = [weights + analytic.cache_bytes(cfg, b, k + i, dtype) for i in range(n)]
        work = {
            "flops": sum(analytic.forward_flops(cfg, b, k + i, 1, 1) for i in range(n)),
            "bytes": float(sum(step_bytes)),
            "tokens": b * n,
        }
        memory = {
            "cache_bytes": handle.cache_nbytes(gen.cache0),
            "cache_bytes_analytic": analytic.cache_bytes(cfg, b, k, dtype),
            "cache_length": k,
        }
        extra = {"per_step_ms": timing.median_ms / n}
        return Measurement(timing, work, memory, extra)


class TrainStep(Workload):
    name = "train_step"
    required = ("seq_len",)
    defaults: ClassVar[dict] = {"batch": None, "tokens_per_batch": None}

    def normalize(self, params: dict) -> dict:
        p = super().normalize(params)
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

    def _inputs(self, handle, cfg, p, seed):
        b, t = p["batch"], p["seq_len"]
        tokens = random_tokens(cfg, b, t + 1, seed)
        be = handle.backend
        return be.tokens(tokens[:, :-1]), be.tokens(positions(b, 0, t)), be.tokens(tokens[:, 1:])

    def gate(self, handle, cfg, p, seed):
        tokens, pos, _ = self._inputs(handle, cfg, p, seed)
        return handle.backend.to_numpy(handle.prefill(tokens, pos)[0])

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
        step, restore = handle.train_step()
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


class Throughput(Workload):
    name = "throughput"
    required = ("gen_len",)
    defaults: ClassVar[dict] = {"prompt": 1, "max_batch": 1024}

    def gate(self, handle, cfg, p, seed):
        return Decode().gate(handle, cfg, {"batch": 1, "prompt": p["prompt"]}, seed)

    def _probe(self, handle, cfg, p, batch, seed) -> float:
        """One full generation at `batch`; wall-clock ms. Raises on out-of-memory."""
        be = handle.backend
        gen = _Generation(handle, cfg, batch, p["prompt"], p["gen_len"], seed)
        be.sync(gen.first)
        t0 = time.perf_counter()
        be.sync(gen.run(handle.fresh(gen.cache0)))
        return (time.perf_counter() - t0) * 1e3

    def measure(self, handle, cfg, p, dtype, seed, tcfg: TimingConfig) -> Measurement:
        """Double the batch until it does not fit (or max_batch), then bisect; time the best."""
        be = handle.backend
        probes: list[dict] = []

        def fits(batch: int) -> bool:
            try:
                ms = self._probe(handle, cfg, p, batch, seed)
                probes.append({"batch": batch, "status": "ok", "ms": ms})
                return True
            except Exception as exc:
                if not be.is_oom(exc):
                    raise
                probes.append({"batch": batch, "status": "oom"})
                be.free()
                return False

        lo, hi = 0, None
        batch = 1
        while batch <= p["max_batch"]:
            if fits(batch):
                lo, batch = batch, batch * 2
            else:
                hi = batch
                break
        if lo == 0:
            raise MemoryError("even batch 1 does not fit")  # recorded as oom
        if hi is not None:
            while hi - lo > max(1, lo // 8):  # resolution: 1/8 of the batch
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        best = lo
        gen = _Generation(handle, cfg, best, p["prompt"], p["gen_len"], seed)
        timing = be.timer().measure(
            gen.run,
            setup=lambda: (handle.fresh(gen.cache0),),
            cfg=TimingConfig(warmup=1, min_reps=2, max_reps=5, budget_s=tcfg.budget_s),
        )
        k, n = p["prompt"], p["gen_len"]
        work = {
            "flops": sum(analytic.forward_flops(cfg, best, k + i, 1, 1) for i in range(n)),
            "bytes": float(
                sum(
                    analytic.weight_bytes(cfg, dtype)
                    + analytic.cache_bytes(cfg, best, k + i, dtype)
                    for i in range(n)
                )
            ),
            "tokens": best * n,
        }
        memory = {
            "cache_bytes": handle.cache_nbytes(gen.cache0),
            "cache_bytes_analytic": analytic.cache_bytes(cfg, best, k, dtype),
            "cache_length": k,
        }
        limit = "max_batch" if hi is None else "memory"
        extra = {"batch": best, "limited_by": limit, "probes": probes}
        return Measurement(timing, work, memory, extra)


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
