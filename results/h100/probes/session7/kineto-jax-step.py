"""Kernel-level GPU timeline of JAX RG-2B decode steps at batch 1 (XLA step; Pallas GEMV step with
argv[1] == 'gemv'), traced by torch.profiler's CUPTI (process-wide, so it sees XLA's kernels)."""

import collections
import json
import sys

import jax
import jax.numpy as jnp
import torch  # CUPTI via kineto

import models.jax
from models.config import preset
from models.jax.optimized import copy_cache

gemv = len(sys.argv) > 1 and sys.argv[1] == "gemv"
out = sys.argv[2]
cfg = preset("recurrentgemma-2b")
m = models.jax.Model(cfg, impl="optimized", decode_gemv=gemv)
params = m.init(jax.random.PRNGKey(0), jnp.bfloat16)
tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 2048), 0, cfg.vocab_size)
pos = jnp.arange(2048)[None]
_, cache = m.prefill(params, tokens, pos, logits="last")
c = copy_cache(cache)
tok, p = tokens[:, :1], pos[:, :1] + 2048
argmax = jax.jit(lambda l: jnp.argmax(l[:, -1], axis=-1)[:, None].astype(jnp.int32))
for _ in range(3):
    logits, c = m.decode(params, tok, p, c)
    tok = argmax(logits)
jax.block_until_ready(tok)
torch.cuda.init()
N = 8
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(N):
        logits, c = m.decode(params, tok, p, c)
        tok = argmax(logits)
    jax.block_until_ready(tok)
prof.export_chrome_trace(out + ".trace.json")
with open(out + ".trace.json") as f:
    trace = json.load(f)["traceEvents"]
ev = [e for e in trace if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
ev.sort(key=lambda e: e["ts"])
busy = sum(e["dur"] for e in ev)
span = ev[-1]["ts"] + ev[-1]["dur"] - ev[0]["ts"]
by = collections.Counter()
cnt = collections.Counter()
for e in ev:
    by[e["name"][:90]] += e["dur"]
    cnt[e["name"][:90]] += 1
lines = [
    f"{'gemv' if gemv else 'xla'}: {len(ev) / N:.0f} kernels a step, busy {busy / N / 1e3:.3f} ms a step, span {span / N / 1e3:.3f} ms a step, idle {(span - busy) / N / 1e3:.3f} ms"
]
for name, d in by.most_common(30):
    lines.append(f"{cnt[name] / N:7.1f} {d / N:9.1f} us  {name}")
print("\n".join(lines))
with open(out + ".txt", "w") as f:
    f.write("\n".join(lines) + "\n")
