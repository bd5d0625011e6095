"""Residual blocks and their decode caches (JAX). Mirrors models/torch/blocks.py.

The caches hold the same arrays as on the torch side (see there). `length`, the number of tokens
before the chunk, may be a traced int32 scalar, so one compiled decode step serves every position;
a global-attention cache is grown (doubling) outside jit by `grow`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.conv1d_jax import conv1d_ref
from kernels.rglru_jax import rg_lru_ref
from models.config import RECURRENT, ModelConfig
from models.jax import layers


class RecurrentCache(NamedTuple):
    rg_lru: jax.Array  # float32 [b, e]
    conv: jax.Array  # [b, W-1, e]


class AttentionCache(NamedTuple):
    k: jax.Array  # [b, s, h]
    v: jax.Array  # [b, s, h]
    pos: jax.Array  # int32 [s], absolute index of the token in each slot, -1 if empty
    doc_start: jax.Array  # int32 [b], index of the current document's first token


BlockCache = RecurrentCache | AttentionCache


def global_capacity(n_tokens: int) -> int:
    """Slots of a global-attention cache holding n_tokens: the next power of two above, >= 16."""
    return max(16, 1 << n_tokens.bit_length())


def init_recurrent_block(key, cfg: ModelConfig, dtype) -> dict:
    d, e = cfg.width, cfg.lru_width
    ky, kx, ko, kc, kl = jax.random.split(key, 5)
    return {
        "linear_y": layers.init_linear(ky, d, e, math.sqrt(1.0 / d), True, dtype),
        "linear_x": layers.init_linear(kx, d, e, math.sqrt(1.0 / d), True, dtype),
        "linear_out": layers.init_linear(ko, e, d, math.sqrt(2.0 / cfg.depth / e), True, dtype),
        "conv_1d": layers.init_conv1d(kc, e, cfg.conv_width, dtype),
        "rg_lru": layers.init_rg_lru(kl, e, cfg.lru_heads, dtype),
    }


def recurrent_block(
    cfg: ModelConfig,
    p: dict,
    x,
    segment_pos,
    cache,
    length,
    return_cache: bool,
    rg_lru=rg_lru_ref,
):
    """linear_out( RG-LRU(Conv1D(linear_x(x))) * gelu(linear_y(x)) ); x: [b, t, d]. `rg_lru`: a
    function with rg_lru_ref's signature (the optimized path passes its own)."""
    del cfg, length
    y = layers.gelu(layers.linear(p["linear_y"], x))
    mixed, new_cache = recurrent_mix(
        p, layers.linear(p["linear_x"], x), y, segment_pos, cache, rg_lru
    )
    out = layers.linear(p["linear_out"], mixed)
    return out, new_cache if return_cache else None


def recurrent_mix(p: dict, xb, y, segment_pos, cache, rg_lru=rg_lru_ref):
    """The recurrent block between its projections: RG-LRU(Conv1D(xb)) * y (xb = linear_x(x),
    y = gelu(linear_y(x)), [b, t, e]) and the new RecurrentCache."""
    xb, conv_state = conv1d_ref(
        xb, p["conv_1d"]["w"], p["conv_1d"]["b"], segment_pos, None if cache is None else cache.conv
    )
    lru = p["rg_lru"]
    xb, h_last = rg_lru(
        xb,
        layers.block_diagonal_linear(lru["input_gate"], xb),
        layers.block_diagonal_linear(lru["a_gate"], xb),
        lru["a_param"],
        segment_pos,
        None if cache is None else cache.rg_lru,
    )
    return xb * y, RecurrentCache(h_last, conv_state)


def init_attention_block(key, cfg: ModelConfig, dtype) -> dict:
    d, n, h = cfg.width, cfg.num_heads, cfg.head_dim
    kq, kk, kv, kf = jax.random.split(key, 4)
    std = math.sqrt(1.0 / d)
    return {
        "proj_q": layers.init_linear(kq, d, n * h, std, False, dtype),
        "proj_k": layers.init_linear(kk, d, h, std, False, dtype),
        "proj_v": layers.init_linear(kv, d, h, std, False, dtype),
        "proj_final": layers.init_linear(
            kf, n * h, d, math.sqrt(2.0 / cfg.depth / (n * h)), cfg.bias, dtype
        ),
    }


def project(cfg: ModelConfig, p: dict, x, segment_pos):
    """q [b, t, n, h] and the one key/value head k, v [b, t, h], RoPE at segment_pos."""
    q, k = rotate(cfg, layers.linear(p["proj_q"], x), layers.linear(p["proj_k"], x), segment_pos)
    return q, k, layers.linear(p["proj_v"], x)


def rotate(cfg: ModelConfig, q, k, segment_pos):
    """The projections q [b, t, n * h], k [b, t, h] -> q [b, t, n, h], k [b, t, h], with RoPE."""
    b, t, _ = q.shape
    q = layers.apply_rope(
        q.reshape(b, t, cfg.num_heads, cfg.head_dim), segment_pos, cfg.rope_dims, cfg.rope_base
    )
    k = layers.apply_rope(k[:, :, None], segment_pos, cfg.rope_dims, cfg.rope_base)[:, :, 0]
    return q, k


def doc_positions(segment_pos, cache, length):
    """The chunk's stream indices q_pos [t] (after `length` tokens) and each token's document
    start doc_start [b, t] (carried over from the cache, moved by every segment_pos == 0)."""
    b, t = segment_pos.shape
    q_pos = length + jnp.arange(t, dtype=jnp.int32)
    prev_start = jnp.zeros((b,), jnp.int32) if cache is None else cache.doc_start
    reset_at = jnp.where(segment_pos == 0, q_pos, -1)
    return q_pos, jnp.maximum(prev_start[:, None], jax.lax.cummax(reset_at, axis=1))


def attention_block(cfg: ModelConfig, p: dict, x, segment_pos, cache, length, return_cache: bool):
    """Multi-query attention with RoPE, local or global; x: [b, t, d] after `length` tokens."""
    b, t, _ = x.shape
    q, k, v = project(cfg, p, x, segment_pos)
    q_pos, doc_start = doc_positions(segment_pos, cache, length)

    if cache is None:
        keys, values, k_pos = k, v, q_pos
    else:
        keys = jnp.concatenate([cache.k, k.astype(cache.k.dtype)], axis=1)
        values = jnp.concatenate([cache.v, v.astype(cache.v.dtype)], axis=1)
        k_pos = jnp.concatenate([cache.pos, q_pos])
    out = layers.attend(q, keys, values, q_pos, k_pos, doc_start, cfg.attention_window)
    out = layers.linear(p["proj_final"], out)
    if not return_cache:
        return out, None
    if cache is None:
        cache = empty_attention_cache(cfg, b, t, x.dtype)
    return out, _write(cfg, cache, k, v, length, doc_start[:, -1])


def empty_attention_cache(cfg: ModelConfig, batch: int, n_tokens: int, dtype) -> AttentionCache:
    """An empty cache sized for n_tokens (ring buffer of `window` slots when local)."""
    window = cfg.attention_window
    slots = window if window is not None else global_capacity(n_tokens)
    zeros = jnp.zeros((batch, slots, cfg.head_dim), dtype)
    return AttentionCache(
        k=zeros,
        v=zeros,
        pos=jnp.full((slots,), -1, jnp.int32),
        doc_start=jnp.zeros((batch,), jnp.int32),
    )


def _write(cfg: ModelConfig, cache: AttentionCache, k, v, length, doc_start) -> AttentionCache:
    """Store k, v: [b, t, h] of stream indices length .. length + t - 1 (global: room is there)."""
    window = cfg.attention_window
    t = k.shape[1]
    if window is None:
        pos = length + jnp.arange(t, dtype=jnp.int32)
        slots = pos
    else:  # ring buffer: only the last `window` tokens can be seen again
        keep = min(window, t)
        k, v = k[:, t - keep :], v[:, t - keep :]
        pos = length + jnp.arange(t - keep, t, dtype=jnp.int32)
        slots = pos % window
    return AttentionCache(
        k=cache.k.at[:, slots].set(k.astype(cache.k.dtype)),
        v=cache.v.at[:, slots].set(v.astype(cache.v.dtype)),
        pos=cache.pos.at[slots].set(pos),
        doc_start=doc_start,
    )


def grow(cfg: ModelConfig, cache: BlockCache, n_tokens: int) -> BlockCache:
    """Make a global-attention cache hold n_tokens (doubling); other caches pass through."""
    if not isinstance(cache, AttentionCache) or cfg.attention_window is not None:
        return cache
    slots = cache.k.shape[1]
    if n_tokens <= slots:
        return cache
    pad = global_capacity(n_tokens - 1) - slots
    return AttentionCache(
        k=jnp.pad(cache.k, ((0, 0), (0, pad), (0, 0))),
        v=jnp.pad(cache.v, ((0, 0), (0, pad), (0, 0))),
        pos=jnp.pad(cache.pos, (0, pad), constant_values=-1),
        doc_start=cache.doc_start,
    )


def init_residual_block(key, cfg: ModelConfig, kind: str, dtype) -> dict:
    kt, km = jax.random.split(key)
    p = {"temporal_pre_norm": layers.init_rms_norm(cfg.width, dtype)}
    if kind == RECURRENT:
        p["recurrent_block"] = init_recurrent_block(kt, cfg, dtype)
    else:
        p["attention_block"] = init_attention_block(kt, cfg, dtype)
    p["channel_pre_norm"] = layers.init_rms_norm(cfg.width, dtype)
    p["mlp_block"] = layers.init_mlp_block(
        km, cfg.width, cfg.mlp_width, cfg.bias, 2.0 / cfg.depth, dtype
    )
    return p


def residual_block(
    cfg: ModelConfig,
    kind: str,
    p: dict,
    x,
    segment_pos,
    cache,
    length,
    return_cache,
    impl: str = "reference",
    one_document: bool = False,
):
    """x + mix(RMSNorm(x)), then + MLP(RMSNorm(.)); returns ([b, t, d], new cache or None).
    impl="optimized" runs the mixing block of models/jax/optimized.py (one_document: see there)."""
    if impl == "optimized":
        from models.jax import optimized

        if kind == RECURRENT:
            mix = optimized.recurrent_block
        else:
            mix = partial(optimized.attention_block, one_document=one_document)
    else:
        mix = recurrent_block if kind == RECURRENT else attention_block
    name = "recurrent_block" if kind == RECURRENT else "attention_block"
    normed = layers.rms_norm(p["temporal_pre_norm"], x, cfg.norm_eps)
    mixed, new_cache = mix(cfg, p[name], normed, segment_pos, cache, length, return_cache)
    residual = mixed + x
    out = layers.mlp_block(
        p["mlp_block"], layers.rms_norm(p["channel_pre_norm"], residual, cfg.norm_eps)
    )
    return out + residual, new_cache
