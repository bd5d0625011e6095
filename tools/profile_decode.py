"""Profiles the optimized decode step, torch (CUDA-graph replay) and JAX, kernel by kernel (GPU).

Where a decode step's time goes, on the GPU: the optimized torch step as the suite runs it
(StaticDecoder, a CUDA-graph replay) and the optimized JAX step (jitted, cache donated).

    python tools/profile_decode.py [--model recurrentgemma-2b] [--batch 1 16] [--out DIR]

torch: the kernels of 20 replays under torch.profiler, per step: each kernel's count and GPU
time, their sum beside the wall time of a step (the difference is the idle time between the
graph's kernels). JAX: the wall time of a step as the decode suite runs it (8 steps a run, each
fed the previous argmax), and synced, and the compiled step's optimized HLO written to
DIR (its fusions, custom calls and copies counted here), to find what XLA adds around the
matmuls. Random weights, bf16, a 2048-token prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, run as a script

import argparse
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from models.config import preset

STEPS = 20


def _torch(name: str, batch: int, prompt: int, out: Path | None) -> None:
    from torch.profiler import ProfilerActivity, profile

    from models.torch import Model
    from models.torch.optimized import StaticDecoder

    torch.manual_seed(0)
    m = Model(preset(name), impl="optimized", device="cuda", dtype=torch.bfloat16).eval()
    tokens = torch.randint(0, m.config.vocab_size, (batch, prompt), device="cuda")
    pos = torch.arange(prompt, device="cuda").expand(batch, -1)
    with torch.no_grad():
        _, cache = m.prefill(tokens, pos, logits="last")
        dec = StaticDecoder(m, cache, capacity=prompt + 4 * STEPS + 8)
        tok, p = tokens[:, :1].contiguous(), pos[:, :1] + prompt
        for _ in range(3):
            dec.step(tok, p)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            dec.step(tok, p)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / STEPS * 1e3
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(STEPS):
                dec.step(tok, p)
            torch.cuda.synchronize()
    kernels = Counter()
    times = Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] += 1
            times[e.name] += e.device_time_total
    busy = sum(times.values()) / STEPS / 1e3
    n = sum(kernels.values()) / STEPS
    lines = [
        f"== torch {name} batch={batch}: step {wall:.3f} ms wall, kernels busy {busy:.3f} ms, "
        f"{n:.0f} kernels per step, idle {wall - busy:.3f} ms ({(wall - busy) / n * 1e3:.2f} us "
        "per kernel)",
        f"{'per step':>9} {'us/step':>9} {'us each':>8}  kernel",
    ]
    for k, t in times.most_common():
        c = kernels[k] / STEPS
        lines.append(f"{c:9.1f} {t / STEPS:9.1f} {t / STEPS / c:8.2f}  {k[:110]}")
    text = "\n".join(lines)
    print(text, flush=True)
    if out:
        (out / f"torch-{name}-b{batch}.txt").write_text(text + "\n")
    del dec, cache, m
    torch.cuda.empty_cache()


def _jax(name: str, batch: int, prompt: int, out: Path | None, gemv: bool = False) -> None:
    import jax
    import jax.numpy as jnp

    import models.jax
    from models.jax.optimized import copy_cache

    jm = models.jax.Model(preset(name), impl="optimized", decode_gemv=gemv)
    params = jm.init(jax.random.PRNGKey(0), jnp.bfloat16)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (batch, prompt), 0, jm.config.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(prompt), (batch, prompt))
    _, cache = jm.prefill(params, tokens, pos, logits="last")
    tok, p = tokens[:, :1], pos[:, :1] + prompt
    c = copy_cache(cache)
    argmax = jax.jit(lambda x: jnp.argmax(x[:, -1], axis=-1)[:, None].astype(tok.dtype))
    for _ in range(3):
        logits, c = jm.decode(params, tok, p, c)
        nxt = argmax(logits)
    nxt.block_until_ready()
    # as the decode suite's loop runs it: each step's argmax fed to the next, 8 steps a timed
    # run, median of the runs (the same token repeated, without the argmax, overlapped steps
    # that the suite does not, and read misleadingly low)
    runs = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        for _ in range(8):
            logits, c = jm.decode(params, nxt, p, c)
            nxt = argmax(logits)
        nxt.block_until_ready()
        runs.append((time.perf_counter() - t0) / 8 * 1e3)
    wall = float(np.median(runs))
    t0 = time.perf_counter()
    for _ in range(STEPS):
        logits, c = jm.decode(params, tok, p, c)
        logits.block_until_ready()
    synced = (time.perf_counter() - t0) / STEPS * 1e3
    # the compiled step: lower the model's own jitted decode on the same arguments
    rows = jm._rows_for(params) if jm._gemv_at(batch) else None  # as Model.decode passes it
    compiled = jm._decode.lower(params, tok, p, c.blocks, np.int32(c.length), rows).compile()
    hlo = compiled.as_text()
    entry = hlo[hlo.find("ENTRY") :]
    ops = Counter(re.findall(r"\s([a-z][a-z-]*)\(", entry))
    big_copies = []
    for m in re.finditer(r"=\s*\w+\[([\d,]*)\]\S*\s(copy|transpose)\(", entry):
        n = 1
        for d in filter(None, m.group(1).split(",")):
            n *= int(d)
        if n >= 1 << 20:
            line_start = entry.rfind("\n", 0, m.start()) + 1
            big_copies.append(entry[line_start : entry.find("\n", m.end())].strip()[:160])
    lines = [
        f"== jax{'+gemv' if gemv else ''} {name} batch={batch}: step {wall:.3f} ms fed back, "
        f"{synced:.3f} ms synced "
        f"per step; entry ops: " + ", ".join(f"{k} {v}" for k, v in ops.most_common(12)),
        f"large copies/transposes in the entry computation: {len(big_copies)}",
        *big_copies[:20],
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if out:
        tag = "jax-gemv" if gemv else "jax"
        (out / f"{tag}-{name}-b{batch}.txt").write_text(text + "\n")
        (out / f"{tag}-{name}-b{batch}.hlo.txt").write_text(hlo)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--backend", choices=["torch", "jax", "both"], default="both")
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--out")
    parser.add_argument(
        "--jax-gemv", action="store_true",
        help="JAX: the step of XLA matmuls (decode_gemv=False), then of Pallas GEMVs (True)",
    )  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for name in args.model or ["recurrentgemma-2b"]:
        for b in args.batch:
            if args.backend in ("torch", "both"):
                _torch(name, b, args.prompt, out)
            if args.backend in ("jax", "both"):
                _jax(name, b, args.prompt, out)
                if args.jax_gemv:
                    _jax(name, b, args.prompt, out, gemv=True)


if __name__ == "__main__":
    main()
