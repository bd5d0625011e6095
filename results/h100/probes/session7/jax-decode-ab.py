"""JAX RG-2B decode at batch 1, the suite's loop (8 greedy steps, argmax fed back, one timed run =
8 steps), XLA step vs Pallas-GEMV step, alternating, same params."""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import models.jax
from models.config import preset
from models.jax.optimized import copy_cache

cfg = preset("recurrentgemma-2b")
models_ = {
    k: models.jax.Model(cfg, impl="optimized", decode_gemv=v)
    for k, v in (("xla", False), ("gemv", True))
}
params = models_["xla"].init(jax.random.PRNGKey(0), jnp.bfloat16)
tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 2048), 0, cfg.vocab_size)
pos = jnp.arange(2048)[None]
argmax = jax.jit(lambda l: jnp.argmax(l[:, -1], axis=-1)[:, None].astype(jnp.int32))
out = {}
state = {}
for k, m in models_.items():
    logits, cache = m.prefill(params, tokens, pos, logits="last")
    state[k] = (argmax(logits), cache)
steps = [jnp.full((1, 1), 2048 + i, dtype=jnp.int32) for i in range(8)]


def run(k):
    m = models_[k]
    tok, cache0 = state[k]
    c = copy_cache(cache0)
    jax.block_until_ready(c)
    t0 = time.perf_counter()
    for p in steps:
        logits, c = m.decode(params, tok, p, c)
        tok = argmax(logits)
    tok.block_until_ready()
    return (time.perf_counter() - t0) * 1e3


for k in models_:
    for _ in range(3):
        run(k)
times = {k: [] for k in models_}
for _ in range(20):
    for k in models_:
        times[k].append(run(k))
for k, v in times.items():
    print(
        k,
        "median per step %.3f ms" % (statistics.median(v) / 8),
        "min %.3f" % (min(v) / 8),
        flush=True,
    )
with open(sys.argv[1], "w") as f:
    json.dump(times, f)
