"""Layers of the reference model (JAX). Mirrors models/torch/layers.py function for function.

Parameters are plain dicts named and laid out like the torch state_dict (linear weights [out, in]).
Shapes: b batch, t time, d width, e RG-LRU width, n heads, h head dim, s cache slots, m MLP width.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def gelu(x: jax.Array) -> jax.Array:
    """GeLU, tanh approximation."""
    return jax.nn.gelu(x, approximate=True)


def linear(p: dict, x: jax.Array) -> jax.Array:
    """x @ weight.T (+ bias); weight [out, in] as in torch."""
    y = x @ p["weight"].T
    return y + p["bias"] if "bias" in p else y


def init_linear(key, d_in: int, d_out: int, std: float, bias: bool, dtype) -> dict:
    p = {"weight": (jax.random.normal(key, (d_out, d_in)) * std).astype(dtype)}
    if bias:
        p["bias"] = jnp.zeros((d_out,), dtype)
    return p


def rms_norm(p: dict, x: jax.Array, eps: float) -> jax.Array:
    """x / rms(x) * (1 + scale)."""
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + eps) * (p["scale"] + 1)


def init_rms_norm(width: int, dtype) -> dict:
    return {"scale": jnp.zeros((width,), dtype)}


def block_diagonal_linear(p: dict, x: jax.Array) -> jax.Array:
    """[b, t, e] -> [b, t, e] through num_blocks independent [e/k, e/k] maps plus bias."""
    k = p["w"].shape[0]
    xb = x.reshape(*x.shape[:-1], k, -1)
    y = jnp.einsum("...hi,hij->...hj", xb, p["w"]) + p["b"]
    return y.reshape(x.shape)


def init_block_diagonal(key, width: int, num_blocks: int, dtype) -> dict:
    bw = width // num_blocks
    return {
        "w": (jax.random.normal(key, (num_blocks, bw, bw)) * math.sqrt(1.0 / bw)).astype(dtype),
        "b": jnp.zeros((num_blocks, bw), dtype),
    }


def init_conv1d(key, width: int, temporal_width: int, dtype) -> dict:
    std = math.sqrt(0.01 / temporal_width)
    return {
        "w": (jax.random.normal(key, (temporal_width, width)) * std).astype(dtype),
        "b": jnp.zeros((width,), dtype),
    }


def init_a_param(key, width: int, dtype, min_rad: float = 0.9, max_rad: float = 0.999):
    """The official initialisation: exp(-softplus(Λ)) uniform by area on [min_rad, max_rad]."""
    u = jax.random.uniform(key, (width,), minval=min_rad**2 + 1e-8, maxval=max_rad**2 + 1e-8)
    log_radius = 0.5 * jnp.log(u)
    return jnp.log(jnp.exp(-log_radius) - 1.0).astype(dtype)


def init_rg_lru(key, width: int, num_heads: int, dtype) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "a_param": init_a_param(k1, width, dtype),
        "input_gate": init_block_diagonal(k2, width, num_heads, dtype),
        "a_gate": init_block_diagonal(k3, width, num_heads, dtype),
    }


def mlp_block(p: dict, x: jax.Array) -> jax.Array:
    """Gated MLP: ffw_down(gelu(x W0 + b0) * (x W1 + b1)); [b, t, d] -> [b, t, d].

    Two products on the halves of ffw_up.w [2, d, m], not one einsum "btd,cdm->cbtm": that
    einsum's free dimensions (c, m) sit on either side of the contracted d, so XLA copies the
    whole weight into a [c m, d] layout on every call before its GEMM (seen in the compiled HLO;
    the torch model had the same copy, docs/h100.md)."""
    w = p["ffw_up"]["w"]
    gate, up = x @ w[0], x @ w[1]
    if "b" in p["ffw_up"]:
        gate, up = gate + p["ffw_up"]["b"][0], up + p["ffw_up"]["b"][1]
    return linear(p["ffw_down"], gelu(gate) * up)


def init_mlp_block(key, width: int, expanded: int, bias: bool, out_scale: float, dtype) -> dict:
    k1, k2 = jax.random.split(key)
    up = {"w": (jax.random.normal(k1, (2, width, expanded)) * math.sqrt(1.0 / width)).astype(dtype)}
    if bias:
        up["b"] = jnp.zeros((2, expanded), dtype)
    std = math.sqrt(out_scale / expanded)
    return {"ffw_up": up, "ffw_down": init_linear(k2, expanded, width, std, bias, dtype)}


def apply_rope(x: jax.Array, positions: jax.Array, rope_dims: int, base: float) -> jax.Array:
    """Rotary embedding on the first `rope_dims` channels of each head (rotate-half layout).

    x: [b, t, n, h]; positions: int [b, t] (segment positions).
    """
    x_rope, x_pass = x[..., :rope_dims], x[..., rope_dims:]
    freq = jnp.arange(rope_dims // 2)
    inv_frequencies = 1.0 / (base ** (2 * freq / rope_dims))
    angles = positions[..., None, None] * inv_frequencies
    sin, cos = jnp.sin(angles).astype(x.dtype), jnp.cos(angles).astype(x.dtype)
    x1, x2 = jnp.split(x_rope, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x_pass], axis=-1)


def attend(q, k, v, q_pos, k_pos, doc_start, window: int | None) -> jax.Array:
    """Multi-query attention over explicit key positions (see models/torch/layers.py:attend).

    q: [b, t, n, h]; k, v: [b, s, h]; q_pos: int [t]; k_pos: int [s] (-1 = empty slot);
    doc_start: int [b, t]. Returns [b, t, n * h].
    """
    h = q.shape[-1]
    logits = jnp.einsum("btnh,bsh->bnts", q, k) * h**-0.5
    kp = k_pos[None, None, :]
    mask = (kp <= q_pos[None, :, None]) & (kp >= doc_start[:, :, None])
    if window is not None:
        mask = mask & (q_pos[None, :, None] - kp <= window)
    logits = jnp.where(mask[:, None], logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bnts,bsh->btnh", probs, v)
    return out.reshape(*out.shape[:2], -1)
