"""The optimized path of the JAX model (`Model(cfg, impl="optimized")`): same params pytree, same
functions, different ops. Mirrors models/torch/optimized.py; models/jax/blocks.py dispatches here.

- Recurrent block: the Pallas RG-LRU kernel (kernels.pallas.rg_lru, differentiable through its
  custom_vjp with Pallas backward kernels) for prefill and training, inside the reference's
  blocks.recurrent_block; a one-token decode step updates the RG-LRU state with the reference's
  gates and one multiply-add in jnp (XLA fuses it; a kernel launch for one time step would gain
  nothing), and the Conv1D is the reference's.
- Attention block, prefill / training without a cache: `jax.nn.dot_product_attention` with
  `is_causal=True` (and `local_window_size=(window, 0)` when the window cuts) when every row holds
  one document; that mask is then static (no [b, t, s] mask built from positions) and the cuDNN
  implementation can skip the masked blocks. Whether the chunk holds one document per row is
  decided on the host, once per call, by the Model (a static jit argument): a document reset
  inside the chunk, a traced segment_pos (the Model called inside a user's jit) or a chunk after
  a cache take the reference attention (explicit mask).
- Attention decode writes the new key / value into the cache first and attends: local attention
  over the whole of its ring buffer of window + 1 slots (the window's keys and the query's own,
  so nothing is concatenated per step); global attention keeps the reference's buffer that
  doubles when full (`blocks.grow`, outside jit; token j in slot j) and, on a GPU, attends over
  its filled slots only (kernels.decode_attention_jax, JAX's flash-decoding Pallas kernel with a
  dynamic loop bound: the bytes read grow with the tokens held, not with the buffer reserved for
  a generation). `GRIFFIN_BENCH_JAX_DECODE_ATTENTION`: "auto" (the default: "pallas" on a GPU,
  "xla" elsewhere), "xla" (the whole buffer, masked) or "pallas" (in the interpreter on a CPU).

- `decode_step_gemv` (Model(decode_gemv); by default at batch 1 on a GPU): the decode step
  with its matmuls as Pallas GEMVs (kernels.gemv_jax) and their norms, biases, residuals and the
  MLP's gelu·mul fused in, as the torch StaticDecoder's batch-1 step.

Decode is jitted with the cache donated (`donate_argnums`): on a GPU the new cache reuses the old
one's buffers (in-place updates), and on every backend the input Cache is consumed: its arrays are
deleted and must not be used again. `copy_cache` first to decode twice from the same point.

`GRIFFIN_BENCH_JAX_ATTENTION` picks the implementation of the fast path: "auto" (the default:
cuDNN on a GPU, XLA elsewhere), "xla" or "cudnn" (cuDNN flash attention: bf16 / fp16 only, a
float32 chunk uses XLA). XLA's attention holds the [b, n, t, t] scores of every layer for the
backward: a training step of MQA-400M at T = 4096 (batch 4) asked for 95.5 GB on the H200.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kernels import pallas
from kernels.rglru_jax import rg_lru_gates
from models.config import RECURRENT, ModelConfig
from models.jax import layers

ATTENTION_ENV = "GRIFFIN_BENCH_JAX_ATTENTION"
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")
DECODE_ATTENTION_ENV = "GRIFFIN_BENCH_JAX_DECODE_ATTENTION"
DECODE_ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "pallas")


def attention_implementation(dtype, platform: str | None = None) -> str:
    """The dot_product_attention implementation for the fast path (see the module docstring);
    `platform`: the default backend's, unless given."""
    choice = os.environ.get(ATTENTION_ENV, "") or "auto"
    if choice not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"{ATTENTION_ENV}={choice!r}; valid values: {', '.join(ATTENTION_IMPLEMENTATIONS)}"
        )
    if choice == "auto":
        choice = "cudnn" if (platform or jax.default_backend()) == "gpu" else "xla"
    if choice == "cudnn" and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return "xla"
    return choice


def decode_attention_implementation(platform: str | None = None) -> str:
    """How a decode step attends over a global cache (see the module docstring): "xla" or
    "pallas"; `platform`: the default backend's, unless given."""
    choice = os.environ.get(DECODE_ATTENTION_ENV, "") or "auto"
    if choice not in DECODE_ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"{DECODE_ATTENTION_ENV}={choice!r}; valid values: "
            f"{', '.join(DECODE_ATTENTION_IMPLEMENTATIONS)}"
        )
    if choice == "auto":
        choice = "pallas" if (platform or jax.default_backend()) == "gpu" else "xla"
    return choice


def to_host(x) -> np.ndarray | None:
    """A concrete array on the host (one transfer), or None for a traced value."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def one_document_asker():
    """one_document with a memory of the last concrete array asked about: arrays are immutable,
    so a caller repeating the same segment_pos (a benchmark loop) pays one host transfer."""
    last = [None, False]

    def ask(segment_pos) -> bool:
        if isinstance(segment_pos, jax.core.Tracer):
            return False  # traced (inside a user's jit): the general path, nothing remembered
        if segment_pos is not last[0]:
            last[:] = [segment_pos, one_document(segment_pos)]
        return last[1]

    return ask


def one_document(segment_pos) -> bool:
    """True when no row of a concrete segment_pos starts a document after its first token (one
    transfer to the host); False for a traced segment_pos (the general path is always right)."""
    host = to_host(segment_pos)
    return host is not None and not bool(np.any(host[:, 1:] == 0))


# ----------------------------------------------------------------------------- recurrent block


def rg_lru(x, gate_x, gate_a, a_param, segment_pos=None, h0=None):
    """rg_lru_ref's function for blocks.recurrent_block: the Pallas kernel on a chunk; for one
    decode step (t = 1, with a state) the gates and one multiply-add in jnp, which XLA fuses (a
    kernel launch, or the reference's lax.scan loop, for one time step would gain nothing)."""
    if x.shape[1] == 1 and h0 is not None:
        a, normalized_x = rg_lru_gates(x[:, 0], gate_x[:, 0], gate_a[:, 0], a_param,
                                       None if segment_pos is None else segment_pos[:, 0])  # fmt: skip
        h = a * h0.astype(jnp.float32) + normalized_x
        return h[:, None].astype(x.dtype), h
    return pallas.rg_lru(x, gate_x, gate_a, a_param, segment_pos, h0)


def recurrent_block(cfg: ModelConfig, p: dict, x, segment_pos, cache, length, return_cache: bool):
    """blocks.recurrent_block on the Pallas RG-LRU (a chunk) or a single-step update (decode);
    the Conv1D is the reference's (for t = 1 it is a few fused multiply-adds)."""
    from models.jax import blocks

    return blocks.recurrent_block(
        cfg, p, x, segment_pos, cache, length, return_cache, rg_lru=rg_lru
    )


# ----------------------------------------------------------------------------- attention block


def causal_attention(q, k, v, window: int | None) -> jax.Array:
    """Attention of a chunk holding one document per row, no cache: the causal (and window) mask
    of dot_product_attention. q: [b, t, n, h]; k, v: [b, t, h] (one head). Returns [b, t, n * h].
    Equals layers.attend with q_pos = k_pos = arange(t) and doc_start = 0."""
    t = q.shape[1]
    local = (window, 0) if window is not None and t - 1 > window else None
    impl = attention_implementation(q.dtype)
    args = (q, k[:, :, None].astype(q.dtype), v[:, :, None].astype(q.dtype))
    try:
        out = jax.nn.dot_product_attention(
            *args, is_causal=True, local_window_size=local, implementation=impl
        )
    except (NotImplementedError, RuntimeError, ValueError):
        if impl != "cudnn" or os.environ.get(ATTENTION_ENV) == "cudnn":
            raise  # asked for cuDNN by name: its refusal is the answer
        # "auto": a shape or a cuDNN build that cuDNN's checks refuse at trace time takes XLA
        out = jax.nn.dot_product_attention(
            *args, is_causal=True, local_window_size=local, implementation="xla"
        )
    return out.reshape(*out.shape[:2], -1)


def slots_for(cfg: ModelConfig, n_tokens: int) -> int:
    """Slots of an optimized attention cache: window + 1 (local) or room for n_tokens (global)."""
    from models.jax.blocks import global_capacity

    window = cfg.attention_window
    return window + 1 if window is not None else global_capacity(n_tokens)


def empty_attention_cache(cfg: ModelConfig, batch: int, n_tokens: int, dtype):
    from models.jax.blocks import AttentionCache

    slots = slots_for(cfg, n_tokens)
    return AttentionCache(
        k=jnp.zeros((batch, slots, cfg.head_dim), dtype),
        v=jnp.zeros((batch, slots, cfg.head_dim), dtype),
        pos=jnp.full((slots,), -1, jnp.int32),
        doc_start=jnp.zeros((batch,), jnp.int32),
    )


def _write(cfg: ModelConfig, cache, k, v, length, doc_start):
    """Store k, v: [b, t, h] of stream indices length .. length + t - 1: one dynamic slot for a
    decode step (an in-place update of a donated buffer), else a scatter of the kept tokens."""
    from models.jax.blocks import AttentionCache

    window = cfg.attention_window
    ring = None if window is None else window + 1
    t = k.shape[1]
    k, v = k.astype(cache.k.dtype), v.astype(cache.v.dtype)
    if t == 1:
        slot = length if ring is None else length % ring
        return AttentionCache(
            k=lax.dynamic_update_slice_in_dim(cache.k, k, slot, axis=1),
            v=lax.dynamic_update_slice_in_dim(cache.v, v, slot, axis=1),
            pos=lax.dynamic_update_slice_in_dim(cache.pos, jnp.reshape(length, (1,)), slot, 0),
            doc_start=doc_start,
        )
    keep = t if ring is None else min(ring, t)
    pos = length + jnp.arange(t - keep, t, dtype=jnp.int32)
    slots = pos if ring is None else pos % ring
    return AttentionCache(
        k=cache.k.at[:, slots].set(k[:, t - keep :]),
        v=cache.v.at[:, slots].set(v[:, t - keep :]),
        pos=cache.pos.at[slots].set(pos),
        doc_start=doc_start,
    )


def attention_block(
    cfg: ModelConfig,
    p: dict,
    x,
    segment_pos,
    cache,
    length,
    return_cache: bool,
    one_document: bool = False,
):
    """blocks.attention_block with a causal fast path, and decode in a window + 1 ring buffer.
    one_document: the caller knows that no row of segment_pos starts a document after index 0."""
    from models.jax import blocks  # (blocks imports this module)

    b, t, _ = x.shape
    q, k, v = blocks.project(cfg, p, x, segment_pos)
    window = cfg.attention_window
    q_pos, doc_start = blocks.doc_positions(segment_pos, cache, length)

    if cache is not None and t == 1:
        out, cache = _attend_step(cfg, cache, q, k, v, q_pos, doc_start, length)
        return layers.linear(p["proj_final"], out), cache if return_cache else None
    if cache is None and one_document:
        out = causal_attention(q, k, v, window)
    elif cache is None:
        out = layers.attend(q, k, v, q_pos, q_pos, doc_start, window)
    else:  # a chunk after a cache: the cache's keys, then the chunk's
        keys = jnp.concatenate([cache.k, k.astype(cache.k.dtype)], axis=1)
        values = jnp.concatenate([cache.v, v.astype(cache.v.dtype)], axis=1)
        k_pos = jnp.concatenate([cache.pos, q_pos])
        out = layers.attend(q, keys, values, q_pos, k_pos, doc_start, window)
    out = layers.linear(p["proj_final"], out)
    if not return_cache:
        return out, None
    if cache is None:
        cache = empty_attention_cache(cfg, b, t, x.dtype)
    return out, _write(cfg, cache, k, v, length, doc_start[:, -1])


def _attend_step(cfg: ModelConfig, cache, q, k, v, q_pos, doc_start, length):
    """A decode step's attention: write k, v [b, 1, h] first, then attend over the whole ring
    buffer (local), or over slots doc_start .. length of a global buffer (its token j in slot j)
    where decode_attention_implementation() is "pallas". Returns (out [b, 1, n * h], the new
    cache)."""
    cache = _write(cfg, cache, k, v, length, doc_start[:, -1])
    if cfg.attention_window is None and decode_attention_implementation() == "pallas":
        from kernels.decode_attention_jax import decode_attention

        b, _, n, h = q.shape
        out = decode_attention(q[:, 0], cache.k, cache.v, doc_start[:, -1], length + 1)
        return out.reshape(b, 1, n * h), cache
    out = layers.attend(q, cache.k, cache.v, q_pos, cache.pos, doc_start, cfg.attention_window)
    return out, cache


def check_cache(cfg: ModelConfig, cache) -> None:
    """A local-attention cache must have the optimized layout (window + 1 slots)."""
    from models.jax.blocks import AttentionCache

    window = cfg.attention_window
    for c in cache.blocks:
        if isinstance(c, AttentionCache) and window is not None and c.k.shape[1] != window + 1:
            raise ValueError(
                f"a local-attention cache of {c.k.shape[1]} slots: impl='optimized' decodes from "
                f"its own layout (window + 1 = {window + 1} slots), from an impl='optimized' prefill"
            )


def copy_cache(cache):
    """A copy of a Cache with fresh buffers (the optimized decode consumes its input cache)."""
    return jax.tree_util.tree_map(jnp.copy, cache)


# ----------------------------------------------------------------------------- decode step of GEMVs


def up_rows(params) -> list:
    """Each block's MLP up-projection ffw_up.w [2, K, N] as [2, N, K] (whole rows per program in
    kernels.gemv_jax.gemv_gated_up(rows=True)), copies made once for a params pytree, as the
    torch StaticDecoder makes its `up_rows`. On the H100 the [2, K, N] form took 64 us a layer
    at RG-2B against XLA's 35 us for the same dot (docs/h100.md)."""
    return [jnp.swapaxes(p["mlp_block"]["ffw_up"]["w"], 1, 2) for p in params["blocks"]]


def decode_step_gemv(
    cfg: ModelConfig, params, tokens, segment_pos, cache_blocks, length, rows=None
):
    """One decode step (tokens [b, 1]) with the matmuls as kernels.gemv_jax GEMVs: per block, the
    norm and the projections that read its input in one launch, the mixing as in
    `recurrent_block` / `attention_block` (the Conv1D and RG-LRU step; RoPE, the cache write and
    the attention over the ring), the out-projection + residual, the norm + gated up-projection +
    gelu·mul, the down-projection + residual; the logits as norm + GEMV + soft cap. The JAX twin
    of the torch StaticDecoder's batch-1 step (models.torch.optimized); Model(decode_gemv=True)
    selects it. rows: `up_rows(params)`, for the row form of the up-projection (else the
    params' own [2, K, N]). Returns (logits [b, 1, v], new cache blocks), as
    `run(..., impl="optimized")`."""
    from kernels import gemv_jax
    from models.jax import blocks
    from models.jax.model import embed

    def bias(p):
        return p.get("bias")

    eps = cfg.norm_eps
    x = embed(cfg, params, tokens)[:, 0]  # [b, d]
    new_blocks = []
    for i, (kind, p, c) in enumerate(
        zip(cfg.block_types, params["blocks"], cache_blocks, strict=True)
    ):
        pre = (p["temporal_pre_norm"]["scale"], eps)
        if kind == RECURRENT:
            tb = p["recurrent_block"]
            lins = (tb["linear_y"], tb["linear_x"])
            y, xb = gemv_jax.gemv(x, [q["weight"] for q in lins], [bias(q) for q in lins], norm=pre)
            mixed, c = blocks.recurrent_mix(
                tb, xb[:, None], layers.gelu(y)[:, None], segment_pos, c, rg_lru
            )
            mixed, out_p = mixed[:, 0], tb["linear_out"]
        else:
            tb = p["attention_block"]
            lins = (tb["proj_q"], tb["proj_k"], tb["proj_v"])
            q, k, v = gemv_jax.gemv(
                x, [q["weight"] for q in lins], [bias(q) for q in lins], norm=pre
            )
            q, k = blocks.rotate(cfg, q[:, None], k[:, None], segment_pos)
            q_pos, doc_start = blocks.doc_positions(segment_pos, c, length)
            out, c = _attend_step(cfg, c, q, k, v[:, None], q_pos, doc_start, length)
            mixed, out_p = out[:, 0], tb["proj_final"]
        (residual,) = gemv_jax.gemv(mixed, [out_p["weight"]], [bias(out_p)], residual=x)
        mlp = p["mlp_block"]
        z = gemv_jax.gemv_gated_up(
            residual, mlp["ffw_up"]["w"] if rows is None else rows[i], mlp["ffw_up"].get("b"),
            (p["channel_pre_norm"]["scale"], eps), rows=rows is not None,
        )  # fmt: skip
        down = mlp["ffw_down"]
        (x,) = gemv_jax.gemv(z, [down["weight"]], [bias(down)], residual=residual)
        new_blocks.append(c)
    (logits,) = gemv_jax.gemv(
        x,
        [params["embedder"]["input_embedding"]],
        norm=(params["final_norm"]["scale"], eps),
        cap=cfg.logits_soft_cap or None,
    )
    return logits[:, None], new_blocks


def chunked_loss(cfg: ModelConfig, params: dict, features, targets, chunk_tokens: int = 2048):
    """Mean float32 next-token cross-entropy of the logits of `features` (the residual stream
    after the last block, [b, t, d]) without the [b, t, vocab] logits in memory: the final norm,
    then linear_cross_entropy. The JAX twin of models.torch.optimized.chunked_loss; equals the
    cross-entropy of models.jax.model.logits_from(cfg, params, features)."""
    x = layers.rms_norm(params["final_norm"], features, cfg.norm_eps)
    w = params["embedder"]["input_embedding"]
    cap = float(cfg.logits_soft_cap or 0.0)
    return linear_cross_entropy(
        x.reshape(-1, x.shape[-1]), w, targets.reshape(-1), cap, chunk_tokens
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def linear_cross_entropy(x, w, targets, cap: float, chunk_tokens: int):
    """sum over tokens of cross-entropy(cap(x @ w.T), targets) / n for x [n, d], w [vocab, d],
    targets int [n]: chunk by chunk of tokens (one jax.lax.scan; a chunk holds
    gcd(n, chunk_tokens) tokens), with the gradients computed in the forward pass, so the
    backward neither holds nor recomputes any logits (as torch's _LinearCrossEntropy). The
    logits are rounded to x's dtype, as the model's are, and the loss taken in float32."""
    return _linear_cross_entropy(x, w, targets, cap, chunk_tokens)[0]


def _linear_cross_entropy(x, w, targets, cap, chunk_tokens):
    n, d = x.shape
    c = math.gcd(n, chunk_tokens)
    f32 = jnp.float32

    def chunk(dw, xt):
        xc, tc = xt
        z = (xc @ w.T).astype(f32)  # [c, vocab]
        t = jnp.tanh(z / cap) if cap else None
        z = t * cap if cap else z
        lse = jax.nn.logsumexp(z, axis=-1)
        loss = jnp.sum(lse - jnp.take_along_axis(z, tc[:, None], axis=-1)[:, 0])
        g = jnp.exp(z - lse[:, None]) - jax.nn.one_hot(tc, z.shape[-1], dtype=f32)
        g = (g * (1 - t * t) if cap else g) / n
        g = g.astype(x.dtype)
        dx = (g @ w).astype(x.dtype)
        return dw + jnp.dot(g.T, xc, preferred_element_type=f32), (loss, dx)

    xs = (x.reshape(n // c, c, d), targets.reshape(n // c, c))
    dw, (losses, dx) = jax.lax.scan(chunk, jnp.zeros(w.shape, f32), xs)
    return jnp.sum(losses) / n, (dx.reshape(n, d), dw.astype(w.dtype))


def _linear_cross_entropy_fwd(x, w, targets, cap, chunk_tokens):
    return _linear_cross_entropy(x, w, targets, cap, chunk_tokens)


def _linear_cross_entropy_bwd(cap, chunk_tokens, res, ct):
    dx, dw = res
    return dx * ct.astype(dx.dtype), dw * ct.astype(dw.dtype), None


linear_cross_entropy.defvjp(_linear_cross_entropy_fwd, _linear_cross_entropy_bwd)
