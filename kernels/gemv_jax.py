"""Matrix-vector products for a JAX decode step at batch 1, with their neighbours fused in: the
Pallas (Triton lowering) twin of kernels/gemv.py.

    ys = gemv(x, [w1, w2], biases=[b1, None], norm=(scale, eps))   # [rms_norm(x) @ w.T + b, ...]
    (y,) = gemv(x, [w], residual=r)                   # x @ w.T + r (one output)
    (y,) = gemv(x, [E], norm=(scale, eps), cap=30.0)  # the logits, soft-capped
    z = gemv_gated_up(x, w_up, b_up, norm=(scale, eps))  # gelu(h @ w_up[0] + b0) * (h @ w_up[1] + b1)
    (the same functions with `_ref`: plain jnp, the JAX model's own order of operations)

Layouts are the JAX model's params as they are (models/jax/layers.py), so that it can pass them
unchanged: a linear weight is torch-style [N, K] (`x @ weight.T`; K contiguous), the tied
embedding for the logits [V, K] likewise, and the MLP's ffw_up.w [2, K, N] (`x @ w[i]`; N
contiguous). `gemv_gated_up(rows=True)` takes the halves transposed, [2, N, K] (a copy made once
by a caller, as the torch decoder does: on the H200 the [2, K, N] form of the torch kernel
streamed RG-2B's up-projection at 66% of copy where the row GEMV of the logits reached 102%,
docs/h200.md).

x: [M, K] (M small: each row of x is its own pass over the weights, axis 1 of the grid). Math in
float32 (the norm's sum of squares accumulated in the same loop over K as the products, its
scale applied to x, its rsqrt to the result), outputs in x's dtype.

Kernel layout (`gemv`): a grid of (programs, M). Each program owns BLOCK_N rows of one weight
(programs [0, P0) weight 0, [P0, P0 + P1) weight 1, the rest weight 2: the two or three
projections of one input in one launch) and walks K in [BLOCK_N, BLOCK_K] tiles (rows of
BLOCK_K contiguous elements: coalesced), accumulating tile * x in a float32 [BLOCK_N, BLOCK_K]
register array that is reduced once at the end. K and N are static: the full K tiles are loaded
without masks (a row mask only where N is not a multiple of BLOCK_N) and a tail tile, if any,
with masks. `gemv_gated_up` (the [2, K, N] form) loads [BLOCK_K, BLOCK_N] tiles of both halves
(rows of BLOCK_N contiguous elements) and reduces over axis 0.

Pallas's Triton lowering computes element offsets in int32, so an operand may hold at most
2^31 - 1 elements (the logits' 256000 x 2560 embedding holds 655M): a larger one is a ValueError.

Block sizes and Triton's num_warps / num_stages: `Config`, module defaults below, `config=` per
call. On a CPU backend (or with GRIFFIN_BENCH_PALLAS_INTERPRET=1) the kernels run in Pallas's
interpreter (kernels.pallas.default_interpret).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels.pallas import default_interpret

_F32 = jnp.float32
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


class Config(NamedTuple):
    """Launch parameters: outputs per program (block_n) and K per loop iteration (block_k), both
    powers of two (block_k is clipped to next_pow2(K) per call), Triton's num_warps and
    num_stages."""

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


# The torch kernels' defaults (kernels/gemv.py, chosen on the H100 / H200 with tools/gemv.py;
# the same Triton underneath): a few rows per program, so that a 2560-row weight makes hundreds of
# programs and every SM streams, and BLOCK_N * BLOCK_K = 4096 elements per loaded tile (16 bf16
# per thread at 4 warps). Weights of more than WIDE_ROWS rows in all (the logits' 256000) take 16
# rows a program. The [2, K, N] up-projection takes 16 columns (32-byte pieces of each bf16 row:
# whole sectors) and BLOCK_K 128 (two tiles of 2048). Not yet measured as Pallas kernels:
# tools/gemv_jax.py sweeps them.
GEMV_CONFIG = Config(block_n=4, block_k=1024)
GEMV_WIDE_CONFIG = Config(block_n=16, block_k=256)
WIDE_ROWS = 8192
GATED_UP_CONFIG = Config(block_n=16, block_k=128)
GATED_UP_ROWS_CONFIG = Config(block_n=4, block_k=512)


def _pow2(v: int) -> bool:
    return v >= 1 and v & (v - 1) == 0


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _checked_config(cfg, k: int) -> Config:
    cfg = Config(*cfg)
    if not (_pow2(cfg.block_n) and _pow2(cfg.block_k)) or cfg.num_warps < 1:
        raise ValueError(f"block_n and block_k must be powers of two; got {cfg}")
    return cfg._replace(block_k=min(cfg.block_k, _next_pow2(k)))


# ----------------------------------------------------------------------------- checks


def _shape(a) -> list[int]:
    return list(jnp.shape(a))


def _check(x, weights, biases, residual, norm, cap=None):
    if jnp.ndim(x) != 2:
        raise ValueError(f"x must be [M, K], got {_shape(x)}")
    weights = list(weights)
    if not 1 <= len(weights) <= 3:
        raise ValueError(f"one to three weights, got {len(weights)}")
    m, k = x.shape
    if k < 1:
        raise ValueError(f"x must have K >= 1, got {_shape(x)}")
    if biases is not None and len(biases) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(biases)} biases")
    for i, w in enumerate(weights):
        if jnp.ndim(w) != 2 or w.shape[1] != k:
            raise ValueError(
                f"weight {i} must be [N, {k}] (the model's [out, in]), got {_shape(w)}"
            )
        if biases is not None and biases[i] is not None and _shape(biases[i]) != [w.shape[0]]:
            raise ValueError(f"bias {i} must be [{w.shape[0]}], got {_shape(biases[i])}")
    if residual is not None:
        if len(weights) != 1:
            raise ValueError("a residual goes with one weight")
        if _shape(residual) != [m, weights[0].shape[0]]:
            raise ValueError(
                f"residual must be [{m}, {weights[0].shape[0]}], got {_shape(residual)}"
            )
    _check_norm(norm, k)
    if cap is not None and not float(cap) > 0:
        raise ValueError(f"cap must be a positive number, got {cap}")


def _check_norm(norm, k: int):
    if norm is None:
        return
    if not isinstance(norm, tuple | list) or len(norm) != 2:
        raise ValueError("norm must be (scale [K], eps)")
    if _shape(norm[0]) != [k]:
        raise ValueError(f"the norm's scale must be [{k}], got {_shape(norm[0])}")


# The Pallas Triton lowering computes element offsets in int32: no operand may reach 2^31 elements.
_MAX_ELEMENTS = (1 << 31) - 1


def _check_size(arrays):
    for a in arrays:
        if math.prod(jnp.shape(a)) > _MAX_ELEMENTS:
            raise ValueError(
                f"an operand of {math.prod(jnp.shape(a))} elements {_shape(a)}: the Pallas Triton "
                f"lowering indexes in int32 (at most {_MAX_ELEMENTS})"
            )


def _check_dtype(x, weights):
    if jnp.dtype(x.dtype) not in _DTYPES:
        raise ValueError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    for w in weights:
        if w.dtype != x.dtype:
            raise ValueError(f"weights must share x's dtype ({x.dtype}); got {w.dtype}")


def _check_up(x, w, b, norm, rows: bool):
    if jnp.ndim(x) != 2:
        raise ValueError(f"x must be [M, K], got {_shape(x)}")
    k = x.shape[1]
    if k < 1:
        raise ValueError(f"x must have K >= 1, got {_shape(x)}")
    k_axis, layout = (2, f"[2, N, {k}]") if rows else (1, f"[2, {k}, N]")
    if jnp.ndim(w) != 3 or w.shape[0] != 2 or w.shape[k_axis] != k:
        raise ValueError(f"w must be {layout}, got {_shape(w)}")
    n = w.shape[3 - k_axis]
    if b is not None and _shape(b) != [2, n]:
        raise ValueError(f"b must be [2, {n}], got {_shape(b)}")
    _check_norm(norm, k)


# ----------------------------------------------------------------------------- references


def _rms_norm_ref(x, scale, eps):
    """models/jax/layers.rms_norm exactly: x * rsqrt(mean(x^2) + eps) * (scale + 1), computed in
    x's dtype (the model does not go through float32)."""
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * lax.rsqrt(var + eps) * (scale + 1)


def gemv_ref(x, weights, biases=None, residual=None, norm=None, cap=None, *, config=None,
             interpret=None):  # fmt: skip
    """The model's ops in its order: rms_norm, then h @ w.T + b, soft cap tanh(y / cap) * cap,
    + residual, one output per weight, in the inputs' dtype (float64 inputs under x64 for an
    oracle). config / interpret: ignored (gemv's signature)."""
    del config, interpret
    _check(x, weights, biases, residual, norm, cap)
    h = _rms_norm_ref(x, norm[0], norm[1]) if norm is not None else x
    out = []
    for i, w in enumerate(weights):
        y = h @ w.T
        if biases is not None and biases[i] is not None:
            y = y + biases[i]
        if cap is not None:
            y = jnp.tanh(y / cap) * cap
        if residual is not None:
            y = y + residual
        out.append(y)
    return out


def gemv_gated_up_ref(x, w, b=None, norm=None, *, rows: bool = False, config=None,
                      interpret=None):  # fmt: skip
    """layers.mlp_block's first half: gelu_tanh(h @ w[0] + b[0]) * (h @ w[1] + b[1]),
    h = rms_norm(x) or x; w [2, K, N], or [2, N, K] with rows=True (products h @ w[i].T)."""
    del config, interpret
    _check_up(x, w, b, norm, rows)
    h = _rms_norm_ref(x, norm[0], norm[1]) if norm is not None else x
    gate, up = (h @ w[0].T, h @ w[1].T) if rows else (h @ w[0], h @ w[1])
    if b is not None:
        gate, up = gate + b[0], up + b[1]
    return jax.nn.gelu(gate, approximate=True) * up


# ----------------------------------------------------------------------------- kernel helpers


def _i32(v):
    """Static indices as int32 scalars (the interpreter's load / store discharge wants arrays)."""
    return jnp.int32(v) if isinstance(v, int) else v


def _load(view, mask, other=0.0):
    """A (masked) load, in float32."""
    if mask is None:
        return view[...].astype(_F32)
    return plt.load(view, mask=mask, other=other).astype(_F32)


def _store(view, value, mask):
    value = value.astype(view.dtype)
    if mask is None:
        view[...] = value
    else:
        plt.store(view, value, mask=mask)


def _lane_mask(start, size: int, limit: int):
    """start + arange(size) < limit, or None when every lane is in range whatever the start
    (limit a multiple of size and starts multiples of size)."""
    if limit % size == 0:
        return None
    return (start + lax.iota(jnp.int32, size)) < limit


def _and(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _outer(a, b, shape):
    """mask a along axis 0 and b along axis 1, broadcast to `shape` (None: no mask)."""
    a = None if a is None else jnp.broadcast_to(a[:, None], shape)
    b = None if b is None else jnp.broadcast_to(b[None, :], shape)
    return _and(a, b)


class _XChunks:
    """x[m, k0:k0 + block_k] in float32, times (1 + scale) under a norm, and its squares."""

    def __init__(self, x_ref, s_ref, m, k: int, block_k: int):
        self.x_ref, self.s_ref, self.m, self.k, self.block_k = x_ref, s_ref, m, k, block_k

    def __call__(self, k0, mask):
        sl = pl.ds(k0, self.block_k)
        x = _load(self.x_ref.at[self.m, sl], mask)
        if self.s_ref is None:
            return x, None
        return x * (1.0 + _load(self.s_ref.at[sl], mask)), x * x


def _k_loop(k: int, block_k: int, step, carry):
    """carry = step(k0, kmask, carry) over K: the full tiles in a fori_loop without masks, then
    the tail tile (if any) with kmask = k0 + arange(block_k) < k."""
    n_full, rem = divmod(k, block_k)
    if n_full:

        def body(j, c):
            return step(pl.multiple_of(j * block_k, block_k), None, c)

        carry = lax.fori_loop(0, n_full, body, carry)
    if rem:
        k0 = jnp.int32(n_full * block_k)
        carry = step(k0, k0 + lax.iota(jnp.int32, block_k) < k, carry)
    return carry


def _rms_factor(ss, k: int, eps: float):
    return lax.rsqrt(jnp.sum(ss) / k + eps)


# ----------------------------------------------------------------------------- gemv


def _rows_dot(xs: _XChunks, w_ref, r0, n: int, k: int, bn: int, bk: int):
    """sum_k w[r0 + i, k] * x[k] (* (1 + s[k])) for i < bn, and the squares of x summed over
    lanes (a [bk] vector, None without a norm), in float32."""
    rmask = _lane_mask(r0, bn, n)
    norm = xs.s_ref is not None

    def step(k0, kmask, carry):
        acc, ss = carry
        x, x2 = xs(k0, kmask)
        w = _load(w_ref.at[pl.ds(r0, bn), pl.ds(k0, bk)], _outer(rmask, kmask, (bn, bk)))
        acc = acc + w * x[None, :]
        return (acc, ss + x2) if norm else (acc, ss)

    acc, ss = _k_loop(
        k, bk, step, (jnp.zeros((bn, bk), _F32), jnp.zeros((bk,), _F32) if norm else None)
    )
    return jnp.sum(acc, axis=1), ss, rmask


def _gemv_kernel(*refs, n_w, ns, progs, k, norm, eps, bias, res, cap, bn, bk):
    it = iter(refs)
    x_ref = next(it)
    s_ref = next(it) if norm else None
    w_refs = [next(it) for _ in range(n_w)]
    b_refs = [next(it) if bias[i] else None for i in range(n_w)]
    r_ref = next(it) if res else None
    o_refs = [next(it) for _ in range(n_w)]
    pid, m = pl.program_id(0), pl.program_id(1)
    xs = _XChunks(x_ref, s_ref, m, k, bk)

    def rows(i, first):
        r0 = (pid - first) * bn
        y, ss, rmask = _rows_dot(xs, w_refs[i], r0, ns[i], k, bn, bk)
        if norm:
            y = y * _rms_factor(ss, k, eps)
        if b_refs[i] is not None:
            y = y + _load(b_refs[i].at[pl.ds(r0, bn)], rmask)
        if cap is not None:
            y = jnp.tanh(y / cap) * cap
        if r_ref is not None:
            y = y + _load(r_ref.at[m, pl.ds(r0, bn)], rmask)
        _store(o_refs[i].at[m, pl.ds(r0, bn)], y, rmask)

    if n_w == 1:
        rows(0, 0)
        return
    first = 0
    for i in range(n_w):
        last = first + progs[i]
        if i == 0:
            cond = pid < last
        elif i == n_w - 1:
            cond = pid >= first
        else:
            cond = (pid >= first) & (pid < last)
        pl.when(cond)(functools.partial(rows, i, first))
        first = last


def gemv(x, weights, biases=None, residual=None, norm=None, cap=None, *, config=None,
         interpret=None):  # fmt: skip
    """[norm(x) @ w.T + b (soft-capped) (+ residual) for w in weights], one launch.

    x [M, K] float32 / bfloat16 / float16; weights: one to three [N_i, K] of x's dtype (the JAX
    model's linear weights as they are); biases: None or one per weight (each None or [N_i]);
    residual [M, N] (one weight only); norm: (scale [K], eps) for layers.rms_norm's
    x * rsqrt(mean(x^2) + eps) * (1 + scale); cap: the logits' soft cap tanh(y / cap) * cap.
    config: a Config (default GEMV_CONFIG, or GEMV_WIDE_CONFIG above WIDE_ROWS rows in all);
    interpret: Pallas's interpreter (default kernels.pallas.default_interpret()).
    Returns a list of [M, N_i] in x's dtype."""
    weights = list(weights)
    _check(x, weights, biases, residual, norm, cap)
    _check_dtype(x, weights)
    _check_size([x, *weights])
    m, k = x.shape
    ns = tuple(int(w.shape[0]) for w in weights)
    if config is None:
        config = GEMV_WIDE_CONFIG if sum(ns) > WIDE_ROWS else GEMV_CONFIG
    cfg = _checked_config(config, k)
    interpret = default_interpret() if interpret is None else bool(interpret)
    out_shape = [jax.ShapeDtypeStruct((m, n), x.dtype) for n in ns]
    if m == 0 or sum(ns) == 0:
        return [jnp.zeros(s.shape, s.dtype) for s in out_shape]
    progs = tuple(pl.cdiv(n, cfg.block_n) for n in ns)
    bias = tuple(biases is not None and biases[i] is not None for i in range(len(ns)))
    args = [x]
    if norm is not None:
        args.append(norm[0])
    args += weights
    args += [biases[i] for i in range(len(ns)) if bias[i]]
    if residual is not None:
        args.append(residual)
    kernel = functools.partial(
        _gemv_kernel, n_w=len(ns), ns=ns, progs=progs, k=k, norm=norm is not None,
        eps=float(norm[1]) if norm is not None else 0.0, bias=bias, res=residual is not None,
        cap=float(cap) if cap is not None else None, bn=cfg.block_n, bk=cfg.block_k,
    )  # fmt: skip
    return list(
        pl.pallas_call(
            kernel,
            out_shape=out_shape,
            grid=(sum(progs), m),
            name="griffin_gemv",
            compiler_params=plt.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
            interpret=interpret,
        )(*args)
    )


# ----------------------------------------------------------------------------- gated up


def _gelu_mul(g, u):
    t = jnp.tanh(_SQRT_2_OVER_PI * (g + 0.044715 * (g * g * g)))
    return 0.5 * g * (1.0 + t) * u


def _gated_up_kernel(*refs, n, k, norm, eps, bias, rows, bn, bk):
    it = iter(refs)
    x_ref = next(it)
    s_ref = next(it) if norm else None
    w_ref = next(it)
    b_ref = next(it) if bias else None
    o_ref = next(it)
    pid, m = pl.program_id(0), pl.program_id(1)
    n0 = pid * bn
    nmask = _lane_mask(n0, bn, n)
    xs = _XChunks(x_ref, s_ref, m, k, bk)
    shape = (bn, bk) if rows else (bk, bn)

    def step(k0, kmask, carry):
        g, u, ss = carry
        x, x2 = xs(k0, kmask)
        if rows:  # [2, N, K]: tiles of bn rows, bk contiguous columns
            mask = _outer(nmask, kmask, shape)
            ix, xk = (pl.ds(n0, bn), pl.ds(k0, bk)), x[None, :]
        else:  # [2, K, N]: tiles of bk rows, bn contiguous columns
            mask = _outer(kmask, nmask, shape)
            ix, xk = (pl.ds(k0, bk), pl.ds(n0, bn)), x[:, None]
        g = g + _load(w_ref.at[(jnp.int32(0), *ix)], mask) * xk
        u = u + _load(w_ref.at[(jnp.int32(1), *ix)], mask) * xk
        return g, u, (ss + x2 if norm else ss)

    zeros = jnp.zeros(shape, _F32)
    g, u, ss = _k_loop(k, bk, step, (zeros, zeros, jnp.zeros((bk,), _F32) if norm else None))
    g, u = jnp.sum(g, axis=1 if rows else 0), jnp.sum(u, axis=1 if rows else 0)
    if norm:
        r = _rms_factor(ss, k, eps)
        g, u = g * r, u * r
    if b_ref is not None:
        g = g + _load(b_ref.at[jnp.int32(0), pl.ds(n0, bn)], nmask)
        u = u + _load(b_ref.at[jnp.int32(1), pl.ds(n0, bn)], nmask)
    _store(o_ref.at[m, pl.ds(n0, bn)], _gelu_mul(g, u), nmask)


def gemv_gated_up(x, w, b=None, norm=None, *, rows: bool = False, config=None, interpret=None):
    """The MLP's first half at batch 1: gelu_tanh(h @ w[0] + b[0]) * (h @ w[1] + b[1]) with
    h = norm(x), one launch reading x once and each half of w once. -> [M, N] in x's dtype.

    w: the model's ffw_up.w [2, K, N] (N contiguous; default config GATED_UP_CONFIG), or with
    rows=True its halves transposed, [2, N, K] (K contiguous, GATED_UP_ROWS_CONFIG); b: its
    [2, N] bias or None; norm: (scale [K], eps) as `gemv`."""
    _check_up(x, w, b, norm, rows)
    _check_dtype(x, [w])
    _check_size([x, w])
    m, k = x.shape
    n = int(w.shape[1] if rows else w.shape[2])
    if config is None:
        config = GATED_UP_ROWS_CONFIG if rows else GATED_UP_CONFIG
    cfg = _checked_config(config, k)
    interpret = default_interpret() if interpret is None else bool(interpret)
    if m == 0 or n == 0:
        return jnp.zeros((m, n), x.dtype)
    args = [x] + ([norm[0]] if norm is not None else []) + [w] + ([b] if b is not None else [])
    kernel = functools.partial(
        _gated_up_kernel, n=n, k=k, norm=norm is not None,
        eps=float(norm[1]) if norm is not None else 0.0, bias=b is not None, rows=rows,
        bn=cfg.block_n, bk=cfg.block_k,
    )  # fmt: skip
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
        grid=(pl.cdiv(n, cfg.block_n), m),
        name="griffin_gemv_gated_up",
        compiler_params=plt.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
        interpret=interpret,
    )(*args)
