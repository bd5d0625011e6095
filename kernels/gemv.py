"""Matrix-vector products for a decode step at batch 1, with their neighbours fused in.

    ys = gemv(x, [w1, w2], biases=[b1, None], norm=(scale, eps))   # [rms_norm(x) @ w.T + b, ...]
    (y,) = gemv(x, [w], residual=r)                   # x @ w.T + r (one output)
    (y,) = gemv(x, [E], norm=(scale, eps), cap=30.0)  # the logits, soft-capped
    z = gemv_gated_up(x, w_up, b_up, norm=(scale, eps))  # gelu(h @ w_up[0] + b0) * (h @ w_up[1] + b1)
    (the same functions with `_ref`: plain torch, the model's own order of operations)

At batch 1 a decode step is a chain of GEMVs that read each weight once, and its time is the
weights' bytes over the memory bandwidth plus one launch per kernel. cuBLAS picks a GEMV with
64-row tiles for a 2560 x 2560 weight (by its kernel's name: 40 programs on 132 SMs; ~1.6 TB/s,
about half the copy bandwidth, in an eager H100 profile at 0d844a0, docs/h100.md); these kernels give each program a few rows (hundreds of programs), and fold in what
sits between the GEMVs: the RMSNorm before them (its sum of squares accumulated in the same loop
over x, its scale applied to x, its rsqrt to the result), the bias, the residual add and the
logits' soft cap after them, the two or three projections that read the same input (one
launch), and the MLP's gelu(gate) * up.

x: [M, K] (M rows, each its own pass over the weights: meant for M = 1), weights nn.Linear style
[N, K] (K contiguous) or, for `gemv_gated_up`, the MLP's [2, K, N] (N contiguous) or its halves
transposed, [2, N, K] (`rows=True`, what the decoder uses). Math in float32, outputs in x's
dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._triton import INTERPRET, tl, triton
from kernels.conv1d import conv1d_step_ref, conv_step_tile
from kernels.fused import _SQRT_2_OVER_PI, _tanh, gelu_mul_ref, rms_norm_ref

# Programmatic dependent launch (`pdl=True`, Hopper): the kernel is launched so that it may start
# before the kernel ahead of it in the stream has finished. Its programs first prefetch the first
# tile (BLOCK_K columns) of their weight rows into L2 (the weights do not depend on the previous
# kernel), then wait for it (griddepcontrol.wait) before reading x, and let the next kernel start
# once their own weight loop is done. Meant to hide each GEMV's ramp and tail in a chain of them.
# The first version (whole rows prefetched, the next kernel let in at once) made the H100 decode
# step slower (RG-2B 2.675 -> 3.148 ms, Gemma-2B 2.314 -> 2.742 ms; docs/h100.md),
# not profiled; the likely cause, a waiting kernel's prefetch of its whole weight (up
# to 79 MB) competing with the running one's stream and overrunning L2. This version measured
# faster (decode step, H100, at 8e2cfe5, with the Conv1D epilogue and the configs below: RG-2B
# 2.436 -> 2.375 ms, Gemma-2B 2.106 -> 2.086 ms), so models.torch.optimized.StaticDecoder turns
# it on by default on Hopper. Triton's interpreter has no griddepcontrol: there pdl is ignored.


@triton.jit
def _prefetch_rows(w_ptr, rows, N, K, LINES: tl.constexpr, PER_LINE: tl.constexpr):
    """One L2 prefetch per 128-byte line of w[rows, :K] (PER_LINE elements a line)."""
    lines = tl.arange(0, LINES)
    ok = (rows[:, None] < N) & (lines[None, :] * PER_LINE < K)
    offs = tl.where(ok, rows[:, None].to(tl.int64) * K + lines[None, :] * PER_LINE, 0)
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [w_ptr + offs], dtype=tl.int32,
        is_pure=False, pack=1,
    )  # fmt: skip


@triton.jit
def _wait_for_previous():
    tl.extra.cuda.gdc_wait()


@triton.jit
def _let_next_start():
    tl.extra.cuda.gdc_launch_dependents()


def _pdl_args(pdl: bool, w: torch.Tensor, k: int, block_k: int) -> dict:
    on = pdl and not INTERPRET
    per_line = 128 // w.element_size()  # the first tile of each row: min(k, block_k) columns
    return {"PDL": on, "LINES": triton.next_power_of_2(triton.cdiv(min(k, block_k), per_line)),
            "PER_LINE": per_line, "launch_pdl": on}  # fmt: skip


def _check(x, weights, biases, residual, norm, conv=None):
    if x.dim() != 2:
        raise ValueError(f"x must be [M, K], got {list(x.shape)}")
    if not 1 <= len(weights) <= 3:
        raise ValueError(f"one to three weights, got {len(weights)}")
    k = x.shape[1]
    for i, w in enumerate(weights):
        if w.dim() != 2 or w.shape[1] != k:
            raise ValueError(f"weight {i} must be [N, {k}], got {list(w.shape)}")
        if biases is not None and biases[i] is not None and biases[i].shape != w.shape[:1]:
            raise ValueError(f"bias {i} must be [{w.shape[0]}], got {list(biases[i].shape)}")
    if biases is not None and len(biases) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(biases)} biases")
    if residual is not None:
        if len(weights) != 1:
            raise ValueError("a residual goes with one weight")
        if residual.shape != (x.shape[0], weights[0].shape[0]):
            raise ValueError(
                f"residual must be [{x.shape[0]}, {weights[0].shape[0]}], got "
                f"{list(residual.shape)}"
            )
    if norm is not None and norm[0].shape != (k,):
        raise ValueError(f"the norm's scale must be [{k}], got {list(norm[0].shape)}")
    if conv is not None:
        cw, cb, state, reset = conv
        n, m = weights[-1].shape[0], x.shape[0]
        if cw.dim() != 2 or cw.shape[1] != n or cb.shape != (n,):
            raise ValueError(
                f"the conv's w must be [W, {n}] and b [{n}] (the last weight's rows); got "
                f"{list(cw.shape)}, {list(cb.shape)}"
            )
        if state.shape != (m, cw.shape[0] - 1, n) or not state.is_contiguous():
            raise ValueError(
                f"the conv state must be a contiguous [{m}, {cw.shape[0] - 1}, {n}]; got "
                f"{list(state.shape)}"
            )
        if reset.shape != (m,) or reset.dtype != torch.bool:
            raise ValueError(
                f"the conv's reset must be bool [{m}], got {reset.dtype} {list(reset.shape)}"
            )


def _check_dtype(x, weights):
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    for w in weights:
        if w.dtype != x.dtype or w.device != x.device:
            raise ValueError(
                f"weights must share x's dtype and device ({x.dtype}, {x.device}); got "
                f"{w.dtype}, {w.device}"
            )


def gemv_ref(x, weights, biases=None, residual=None, norm=None, cap=None, conv=None):
    """The model's ops in its order: rms_norm_ref, then x @ w.T + b, soft cap, + residual; with
    `conv`, conv1d_step_ref on the last weight's output (its state updated in place)."""
    _check(x, weights, biases, residual, norm, conv)
    h = rms_norm_ref(x, norm[0], norm[1]) if norm is not None else x
    out = []
    for i, w in enumerate(weights):
        y = F.linear(h, w, None if biases is None else biases[i])
        if cap is not None:
            y = torch.tanh(y / cap) * cap
        if residual is not None:
            y = y + residual
        out.append(y)
    if conv is not None:
        out[-1] = conv1d_step_ref(out[-1], *conv)
    return out


def gemv_gated_up_ref(x, w, b=None, norm=None, rows: bool = False):
    """gelu_tanh(h @ w[0] + b[0]) * (h @ w[1] + b[1]), h = rms_norm_ref(x) or x; with rows=True
    w is [2, N, K] (each half transposed) and the products are h @ w[i].T."""
    _check_up(x, w, b, norm, rows)
    h = rms_norm_ref(x, norm[0], norm[1]) if norm is not None else x
    gate, up = (h @ w[0].T, h @ w[1].T) if rows else (h @ w[0], h @ w[1])
    if b is not None:
        gate, up = gate + b[0], up + b[1]
    return gelu_mul_ref(gate, up)


@triton.jit
def _x_chunk(x_ptr, s_ptr, ks, kmask, NORM: tl.constexpr):
    """x[ks] in float32 (times 1 + s[ks] under an RMSNorm) and x[ks]^2 (zero without one)."""
    x = tl.load(x_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
    if NORM:
        x2 = x * x
        x = x * (1.0 + tl.load(s_ptr + ks, mask=kmask, other=0.0).to(tl.float32))
    else:
        x2 = tl.zeros_like(x)
    return x, x2


@triton.jit
def _rows_dot(x_ptr, s_ptr, w_ptr, rows, N, K, NORM: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr):  # fmt: skip
    """sum_k w[rows, k] * x[k] (* (1 + s[k])) and sum_k x[k]^2, in float32."""
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    ss = tl.zeros((BLOCK_K,), tl.float32)
    rmask = rows < N
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        cmask = cols < K
        x, x2 = _x_chunk(x_ptr, s_ptr, cols, cmask, NORM)
        ss += x2
        w = tl.load(
            w_ptr + rows[:, None].to(tl.int64) * K + cols[None, :],
            mask=rmask[:, None] & cmask[None, :], other=0.0,
        )  # fmt: skip
        acc += w.to(tl.float32) * x[None, :]
    return tl.sum(acc, axis=1), tl.sum(ss, axis=0)


@triton.jit
def _conv_step(y, rows, rmask, N, m, cw_ptr, cb_ptr, cs_ptr, reset_ptr, out_ty, W: tl.constexpr):
    """The Conv1D decode step (kernels.conv1d.conv_step_tile) on the GEMV's outputs: the rows of
    this program are its channels, so no other program reads or writes their state."""
    xv = y.to(out_ty).to(tl.float32)  # the projection's output as the model rounds it
    reset = tl.load(reset_ptr + m) != 0
    return conv_step_tile(xv, rows, rmask, cw_ptr, cb_ptr, cs_ptr + m * (W - 1) * N, reset, N, W)


@triton.jit
def _rows_out(y, ss, b_ptr, r_ptr, o_ptr, rows, N, K, eps, cap, NORM: tl.constexpr,
              BIAS: tl.constexpr, RES: tl.constexpr, CAP: tl.constexpr, m, cw_ptr, cb_ptr,
              cs_ptr, reset_ptr, CONV: tl.constexpr, W: tl.constexpr):  # fmt: skip
    rmask = rows < N
    if NORM:
        y = y / tl.sqrt(ss / K + eps)
    if BIAS:
        y += tl.load(b_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    if CAP:
        y = _tanh(y / cap) * cap
    if RES:
        y += tl.load(r_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    if CONV:
        y = _conv_step(y, rows, rmask, N, m, cw_ptr, cb_ptr, cs_ptr, reset_ptr,
                       o_ptr.dtype.element_ty, W)  # fmt: skip
    tl.store(o_ptr + rows, y.to(o_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _gemv_kernel(x_ptr, s_ptr, r_ptr,
                 w0, b0, o0, N0, P0,
                 w1, b1, o1, N1, P1,
                 w2, b2, o2, N2,
                 K, eps, cap, cw, cb, cs, creset,
                 NORM: tl.constexpr, BIAS0: tl.constexpr, BIAS1: tl.constexpr,
                 BIAS2: tl.constexpr, RES: tl.constexpr, CAP: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
                 LINES: tl.constexpr, PER_LINE: tl.constexpr, CONV: tl.constexpr,
                 W: tl.constexpr):  # fmt: skip
    # programs [0, P0) take rows of weight 0, [P0, P0 + P1) of weight 1, the rest of weight 2;
    # axis 1 is the row of x. CONV (0 none, else 1 + the weight's index): that weight's outputs
    # go through the Conv1D decode step (cw, cb; its state cs updated in place; creset per row)
    pid = tl.program_id(0)
    m = tl.program_id(1).to(tl.int64)
    x_ptr += m * K
    if PDL:
        if pid < P0:
            _prefetch_rows(w0, pid * BLOCK_N + tl.arange(0, BLOCK_N), N0, K, LINES, PER_LINE)
        elif pid < P0 + P1:
            _prefetch_rows(w1, (pid - P0) * BLOCK_N + tl.arange(0, BLOCK_N), N1, K, LINES,
                           PER_LINE)  # fmt: skip
        else:
            _prefetch_rows(w2, (pid - P0 - P1) * BLOCK_N + tl.arange(0, BLOCK_N), N2, K, LINES,
                           PER_LINE)  # fmt: skip
        _wait_for_previous()
    if pid < P0:
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        y, ss = _rows_dot(x_ptr, s_ptr, w0, rows, N0, K, NORM, BLOCK_N, BLOCK_K)
        if PDL:
            _let_next_start()
        _rows_out(y, ss, b0, r_ptr + m * N0, o0 + m * N0, rows, N0, K, eps, cap,
                  NORM, BIAS0, RES, CAP, m, cw, cb, cs, creset, CONV == 1, W)  # fmt: skip
    elif pid < P0 + P1:
        rows = (pid - P0) * BLOCK_N + tl.arange(0, BLOCK_N)
        y, ss = _rows_dot(x_ptr, s_ptr, w1, rows, N1, K, NORM, BLOCK_N, BLOCK_K)
        if PDL:
            _let_next_start()
        _rows_out(y, ss, b1, r_ptr, o1 + m * N1, rows, N1, K, eps, cap, NORM, BIAS1, False, CAP,
                  m, cw, cb, cs, creset, CONV == 2, W)  # fmt: skip
    else:
        rows = (pid - P0 - P1) * BLOCK_N + tl.arange(0, BLOCK_N)
        y, ss = _rows_dot(x_ptr, s_ptr, w2, rows, N2, K, NORM, BLOCK_N, BLOCK_K)
        if PDL:
            _let_next_start()
        _rows_out(y, ss, b2, r_ptr, o2 + m * N2, rows, N2, K, eps, cap, NORM, BIAS2, False, CAP,
                  m, cw, cb, cs, creset, CONV == 3, W)  # fmt: skip


# A few rows per program (hundreds of programs for a 2560-row weight, so every SM streams), and
# BLOCK_N * BLOCK_K = 4096 elements per loaded tile (16 bf16 per thread at 4 warps).
_TILE = 4096


def _block_n(n_rows: int, norm: bool) -> int:
    """Rows per program. With the norm fused, every program also reads x whole and sums its
    squares, so fewer, wider programs pay: in the decode step's regime (weights cold in L2,
    `tools/gemv.py --cold`, H100, docs/h100.md) 8 rows x 512 took RG-2B's x/y
    GEMV from 13.6 to 11.2 us, its qkv from 9.9 to 8.4 and Gemma's from 7.3 to 6.6, the logits
    426 -> 421 us; without the norm (out- and down-projections) 4 x 1024 stays best (8 x 512
    took the out-projection from 7.4 to 13.3 us)."""
    if norm:
        return 8
    return 4 if n_rows <= 8192 else 16


def gemv(
    x, weights, biases=None, residual=None, norm=None, cap=None, *, config=None, pdl=False,
    conv=None,
):  # fmt: skip
    """[norm(x) @ w.T + b (soft-capped) (+ residual) for w in weights], one launch.
    x [M, K]; weights: one to three [N_i, K]; biases: None or one per weight (each None or
    [N_i]); residual [M, N] (one weight only); norm: (scale [K], eps) for rms_norm_ref's
    x / rms(x) * (1 + scale); cap: the logits' soft cap. config: (BLOCK_N, BLOCK_K, num_warps)
    instead of the defaults (tools/gemv.py). pdl: programmatic dependent launch (above).
    conv: (w [W, N], b [N], state [M, W-1, N], reset bool [M]): the last weight's output goes
    through kernels.conv1d's decode step (conv1d_step_ref), its state updated in place: a
    recurrent block's x branch, without a launch of its own."""
    _check(x, weights, biases, residual, norm, conv)
    _check_dtype(x, weights)
    x = x.contiguous()
    m, k = x.shape
    n_rows = sum(w.shape[0] for w in weights)
    bn = _block_n(n_rows, norm is not None)
    bk, warps = min(_TILE // bn, triton.next_power_of_2(k)), 4
    if config is not None:
        bn, bk, warps = config
    ws = [w.contiguous() for w in weights]
    bs = list(biases) if biases is not None else [None] * len(ws)
    outs = [torch.empty(m, w.shape[0], dtype=x.dtype, device=x.device) for w in ws]
    progs = [triton.cdiv(w.shape[0], bn) for w in ws]
    args = []
    for i in range(3):
        if i < len(ws):
            b = bs[i].contiguous() if bs[i] is not None else ws[i]
            args.append((ws[i], b, outs[i], ws[i].shape[0], progs[i]))
        else:
            args.append((ws[0], ws[0], outs[0], 0, 0))
    (w0, b0, o0, n0, p0), (w1, b1, o1, n1, p1), (w2, b2, o2, n2, _) = args
    scale = norm[0].contiguous() if norm is not None else x
    res = residual.contiguous() if residual is not None else x
    if conv is not None:
        cw, cb, cs, creset = conv[0].contiguous(), conv[1].contiguous(), conv[2], conv[3]
        creset, width = creset.contiguous().view(torch.uint8), cw.shape[0]
    else:
        cw = cb = cs = creset = x  # unused
        width = 1
    _gemv_kernel[(sum(progs), m)](
        x, scale, res, w0, b0, o0, n0, p0, w1, b1, o1, n1, p1, w2, b2, o2, n2,
        k, float(norm[1]) if norm is not None else 0.0, float(cap) if cap is not None else 1.0,
        cw, cb, cs, creset,
        NORM=norm is not None, BIAS0=bs[0] is not None,
        BIAS1=len(bs) > 1 and bs[1] is not None, BIAS2=len(bs) > 2 and bs[2] is not None,
        RES=residual is not None, CAP=cap is not None, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
        CONV=len(ws) if conv is not None else 0, W=width, **_pdl_args(pdl, ws[0], k, bk),
    )  # fmt: skip
    return outs


def _check_up(x, w, b, norm, rows: bool = False):
    if x.dim() != 2:
        raise ValueError(f"x must be [M, K], got {list(x.shape)}")
    k_axis, layout = (2, f"[2, N, {x.shape[1]}]") if rows else (1, f"[2, {x.shape[1]}, N]")
    if w.dim() != 3 or w.shape[0] != 2 or w.shape[k_axis] != x.shape[1]:
        raise ValueError(f"w must be {layout}, got {list(w.shape)}")
    n = w.shape[3 - k_axis]
    if b is not None and b.shape != (2, n):
        raise ValueError(f"b must be [2, {n}], got {list(b.shape)}")
    if norm is not None and norm[0].shape != (x.shape[1],):
        raise ValueError(f"the norm's scale must be [{x.shape[1]}], got {list(norm[0].shape)}")


@triton.jit
def _gated_up_kernel(x_ptr, s_ptr, w_ptr, b_ptr, o_ptr, N, K, eps, C: tl.constexpr,
                     KC: tl.constexpr, NORM: tl.constexpr, BIAS: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     PDL: tl.constexpr, LINES: tl.constexpr, PER_LINE: tl.constexpr):  # fmt: skip
    # outputs [pid * BLOCK_N, +BLOCK_N) from both halves of w: with ROWS, w is [2, N, K] and a
    # tile is BLOCK_N whole rows (K contiguous, as _gemv_kernel); else w is [2, K, N] and a tile
    # is BLOCK_K rows of BLOCK_N columns each. Axis 1 of the grid: the row of x.
    idx = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1).to(tl.int64)
    x_ptr += m * K
    nmask = idx < N
    half = K.to(tl.int64) * N
    if PDL:  # (rows=True only: K-contiguous rows to prefetch)
        _prefetch_rows(w_ptr, idx, N, K, LINES, PER_LINE)
        _prefetch_rows(w_ptr + half, idx, N, K, LINES, PER_LINE)
        _wait_for_previous()
    if ROWS:
        acc_g = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        acc_u = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    else:
        acc_g = tl.zeros((BLOCK_K, BLOCK_N), tl.float32)
        acc_u = tl.zeros((BLOCK_K, BLOCK_N), tl.float32)
    ss = tl.zeros((BLOCK_K,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        x, x2 = _x_chunk(x_ptr, s_ptr, ks, kmask, NORM)
        ss += x2
        if ROWS:
            offs = idx[:, None].to(tl.int64) * K + ks[None, :]
            mask = nmask[:, None] & kmask[None, :]
            xk = x[None, :]
        else:
            offs = ks[:, None].to(tl.int64) * N + idx[None, :]
            mask = kmask[:, None] & nmask[None, :]
            xk = x[:, None]
        acc_g += tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32) * xk
        acc_u += tl.load(w_ptr + half + offs, mask=mask, other=0.0).to(tl.float32) * xk
    if PDL:
        _let_next_start()
    if ROWS:
        g = tl.sum(acc_g, axis=1)
        u = tl.sum(acc_u, axis=1)
    else:
        g = tl.sum(acc_g, axis=0)
        u = tl.sum(acc_u, axis=0)
    if NORM:
        r = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)
        g, u = g * r, u * r
    if BIAS:
        g += tl.load(b_ptr + idx, mask=nmask, other=0.0).to(tl.float32)
        u += tl.load(b_ptr + N + idx, mask=nmask, other=0.0).to(tl.float32)
    t = _tanh(C * (g + KC * g * g * g))
    tl.store(o_ptr + m * N + idx, (0.5 * g * (1.0 + t) * u).to(o_ptr.dtype.element_ty), mask=nmask)


def gemv_gated_up(x, w, b=None, norm=None, *, rows: bool = False, config=None, pdl=False):
    """The MLP's first half at batch 1: gelu_tanh(h @ w[0] + b[0]) * (h @ w[1] + b[1]) with
    h = norm(x), one launch reading x once and each half of w once. -> [M, N].

    w: the module's [2, K, N] (N contiguous: each program takes 16 columns, 32-byte pieces of
    every row), or with rows=True the halves transposed, [2, N, K] (K contiguous: each program
    takes whole rows, as `gemv`; a copy of the weight, made once by the caller). On the H200 the
    first form streamed RG-2B's up-projection at 66% of copy where the row GEMV of the logits
    reached 102% (docs/h200.md)."""
    _check_up(x, w, b, norm, rows)
    _check_dtype(x, [w])
    x = x.contiguous()
    w = w.contiguous()
    m, k = x.shape
    n = w.shape[1] if rows else w.shape[2]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    scale = norm[0].contiguous() if norm is not None else x
    if rows:
        # 4 rows x 1024 of each half: cold (tools/gemv.py --cold, H100) RG-2B's up-projection
        # went 33.6 -> 30.4 us against the former 4 x 512, and Gemma's 50.9 -> 45.5 us against
        # 16 x 128
        bn = 4
        bk = min(_TILE // bn, triton.next_power_of_2(k))
    else:
        bn = 16  # 32-byte pieces of bf16 rows: full sectors; N / 16 programs (480 at N = 7680)
        bk = min(_TILE // bn // 2, triton.next_power_of_2(k))
    warps = 4
    if config is not None:
        bn, bk, warps = config
    _gated_up_kernel[(triton.cdiv(n, bn), m)](
        x, scale, w, b.contiguous() if b is not None else w, out, n, k,
        float(norm[1]) if norm is not None else 0.0, C=_SQRT_2_OVER_PI, KC=0.044715,
        NORM=norm is not None, BIAS=b is not None, ROWS=rows, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=warps, **_pdl_args(pdl and rows, w, k, bk),
    )  # fmt: skip
    return out


# The kernels as torch operators, so that a torch.compile'd decode step (models.torch.optimized.
# StaticDecoder) keeps them as calls between the kernels Inductor generates: Inductor cannot see
# into a Triton launch it did not write, and these have no backward (decode only).
@torch.library.custom_op("griffin_bench::gemv", mutates_args=())
def gemv_op(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor | None],
    residual: torch.Tensor | None,
    scale: torch.Tensor | None,
    eps: float,
    cap: float | None,
    pdl: bool = False,
) -> list[torch.Tensor]:
    norm = None if scale is None else (scale, eps)
    return gemv(x, weights, biases, residual, norm, cap, pdl=pdl)


@gemv_op.register_fake
def _(x, weights, biases, residual, scale, eps, cap, pdl=False):
    return [x.new_empty(x.shape[0], w.shape[0]) for w in weights]


@torch.library.custom_op("griffin_bench::gemv_conv", mutates_args=("state",))
def gemv_conv_op(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor | None],
    scale: torch.Tensor | None,
    eps: float,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    state: torch.Tensor,
    reset: torch.Tensor,
    pdl: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """gemv of two weights (a recurrent block's y and x) with the Conv1D step on the second's
    output (`conv`); `state` is mutated. Two outputs, not a list: torch.compile functionalizes
    a mutating operator only if it returns plain tensors (torch 2.11 on the H100 fell back to an
    eager step on a list)."""
    if len(weights) != 2:
        raise ValueError(f"gemv_conv takes two weights (y, x), got {len(weights)}")
    norm = None if scale is None else (scale, eps)
    y, xs = gemv(x, weights, biases, None, norm, None, pdl=pdl, conv=(conv_w, conv_b, state, reset))
    return y, xs


@gemv_conv_op.register_fake
def _(x, weights, biases, scale, eps, conv_w, conv_b, state, reset, pdl=False):
    return tuple(x.new_empty(x.shape[0], w.shape[0]) for w in weights)


@torch.library.custom_op("griffin_bench::gemv_gated_up", mutates_args=())
def gemv_gated_up_op(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    scale: torch.Tensor | None,
    eps: float,
    rows: bool,
    pdl: bool = False,
) -> torch.Tensor:
    return gemv_gated_up(x, w, b, None if scale is None else (scale, eps), rows=rows, pdl=pdl)


@gemv_gated_up_op.register_fake
def _(x, w, b, scale, eps, rows, pdl=False):
    return x.new_empty(x.shape[0], w.shape[1] if rows else w.shape[2])
