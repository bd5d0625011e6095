"""The RG-LRU (Real-Gated Linear Recurrent Unit) after its two gate layers.

    r_t = sigmoid(gate_a_t)            i_t = sigmoid(gate_x_t)
    log a_t = -8 * r_t * softplus(a_param)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

At a document start (segment_pos == 0) the state resets: a_t = 0 and the multiplier is 1. The
gradient of the sqrt is clipped at MAX_SQRT_GRADIENT as in the official code, so that a_t -> 1
does not blow up training in bfloat16. Same function as recurrentgemma's `RGLRU.forward` after
its `input_gate` / `a_gate` layers.

    y, h_last = rg_lru(x, gate_x, gate_a, a_param, segment_pos=None, h0=None)      # Triton
    y, h_last = rg_lru_ref(x, gate_x, gate_a, a_param, segment_pos=None, h0=None)  # plain torch

The Triton forward fuses the gates, the decay, the input normalisation, the resets and the scan in
one pass: it reads x, gate_x, gate_a once and writes y once (8 bytes per element in bf16). The
backward is one pass too, backwards in time: it recomputes the gates, runs the adjoint recurrence
δ_t = dy_t + a_{t+1} δ_{t+1} and writes dx, dgate_x, dgate_a (reading x, both gates, dy and the
saved y: 16 bytes per element); dΛ is reduced per batch row in the kernel and over rows after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._triton import AVAILABLE, INTERPRET, tl, triton
from kernels.scan import (
    _combine,
    _d_offsets,
    _first_row,
    _last_row,
    linear_scan_ref,
)

MAX_SQRT_GRADIENT = 1000.0


class SqrtBoundDerivative(torch.autograd.Function):
    """sqrt(x) whose gradient is clipped at MAX_SQRT_GRADIENT."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1.0 / MAX_SQRT_GRADIENT**2))


def _check(x, gate_x, gate_a, a_param, segment_pos, h0) -> None:
    if x.ndim != 3 or gate_x.shape != x.shape or gate_a.shape != x.shape:
        raise ValueError(
            "x, gate_x, gate_a must all be [b, t, d]; got "
            f"{list(x.shape)}, {list(gate_x.shape)}, {list(gate_a.shape)}"
        )
    b, t, d = x.shape
    if a_param.shape != (d,):
        raise ValueError(f"a_param must be [d] = [{d}], got {list(a_param.shape)}")
    if segment_pos is not None and segment_pos.shape != (b, t):
        raise ValueError(f"segment_pos must be [b, t] = [{b}, {t}], got {list(segment_pos.shape)}")
    state = torch.float64 if x.dtype == torch.float64 else torch.float32
    if h0 is not None and (h0.shape != (b, d) or h0.dtype != state):
        raise ValueError(f"h0 must be {state} [b, d] = [{b}, {d}], got {h0.dtype} {list(h0.shape)}")


def rg_lru_ref(
    x: torch.Tensor,
    gate_x: torch.Tensor,
    gate_a: torch.Tensor,
    a_param: torch.Tensor,
    segment_pos: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch RG-LRU, gates and scan in float32 (float64 for float64 inputs).

    Args:
      x, gate_x, gate_a: [b, t, d]; the gates are pre-sigmoid.
      a_param: [d], the Λ parameter (a = exp(-8 r softplus(Λ))).
      segment_pos: int [b, t] or None; 0 marks a document start (state reset).
      h0: float32 [b, d] or None.
    Returns:
      y: [b, t, d] in x.dtype; h_last: float32 [b, d].
    """
    _check(x, gate_x, gate_a, a_param, segment_pos, h0)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    log_a = -8.0 * torch.sigmoid(gate_a.to(acc)) * F.softplus(a_param.to(acc))
    a = torch.exp(log_a)
    multiplier = SqrtBoundDerivative.apply(1.0 - torch.exp(2.0 * log_a))
    if segment_pos is not None:
        reset = (segment_pos == 0)[..., None]
        a = torch.where(reset, 0.0, a)
        multiplier = torch.where(reset, 1.0, multiplier)
    normalized_x = x.to(acc) * torch.sigmoid(gate_x.to(acc)) * multiplier
    y, h_last = linear_scan_ref(a, normalized_x, h0)
    return y.to(x.dtype), h_last


# (BLOCK_T, BLOCK_D, num_warps, CONTIG_D, NUM_STAGES), as for kernels.scan. With the
# approximate gates (below) one warp of 32 x 32 tiles came first of 27 at both lengths on the
# H100 (0.314 ms, 71% of copy, at T=4096; 1.199 ms, 75%, at T=16384; tools/kernel_configs.py at 3ff8b25); the
# former (32, 16, 2) took 0.371 / 1.913 ms there.
FWD_CONFIG = (32, 32, 1, True, 3)
# the forward's unmasked variant where t and d are multiples of its block (a switch for the
# probes' A/B; the H100 profile showed the forward issue-bound, 71% of issue slots at T=4096)
EVEN_TILES = True
BWD_CONFIG = (16, 32, 2, True, 3)


@triton.jit
def _log1p(y):
    # Kahan: log(u) * y / (u - 1) with u = 1 + y is accurate to a few ulps even where 1 + y rounds
    u = 1.0 + y
    exact = u == 1.0
    return tl.where(exact, y, tl.log(u) * (y / tl.where(exact, 1.0, u - 1.0)))


@triton.jit
def _softplus(z):
    return tl.maximum(z, 0.0) + _log1p(tl.exp(-tl.abs(z)))


# The gates' special functions as the GPU's approximate instructions with denormals flushed
# (ex2/rcp/sqrt .approx.ftz; PTX documents their error at a few ulp for normal results, and the
# kernel tests pass on this path on the H100 at 3ff8b25). Without .ftz the
# compiler wraps each in a denormal range check and rescaling; the H100 profile showed the forward
# issue-bound (71% of issue slots at T=4096, docs/h100.md). The interpreter
# (no inline PTX) takes tl.exp / tl.sigmoid / tl.sqrt.
if AVAILABLE:  # (without Triton the kernels are stand-ins that raise when launched)
    _FAST_MATH = tl.constexpr(not INTERPRET)
    _LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _ptx1(x, op: tl.constexpr):
    return tl.inline_asm_elementwise(
        op + " $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
    )


@triton.jit
def _exp(x):
    if _FAST_MATH:
        return _ptx1(x * _LOG2E, "ex2.approx.ftz.f32")
    else:
        return tl.exp(x)


@triton.jit
def _sigmoid(x):
    if _FAST_MATH:
        return _ptx1(1.0 + _exp(-x), "rcp.approx.ftz.f32")
    else:
        return tl.sigmoid(x)


@triton.jit
def _sqrt(x):
    if _FAST_MATH:
        return _ptx1(x, "sqrt.approx.ftz.f32")
    else:
        return tl.sqrt(x)


@triton.jit
def _gates(x, gx, ga, sp, reset):
    """The gates of a tile: r, i, e = exp(log a) before resets, a, z = 1 - e^2, the multiplier
    sqrt(z) and the normalised input; resets give a = 0 and multiplier 1."""
    r = _sigmoid(ga)
    e = _exp(-8.0 * r * sp[None, :])
    a = tl.where(reset, 0.0, e)
    # 1 - e^2 as (1 - e)(1 + e): one exp per element instead of two, and 1 - e is exact for
    # e >= 1/2 (Sterbenz), so z keeps its relative accuracy as a -> 1
    z = (1.0 - e) * (1.0 + e)
    mult = tl.where(reset, 1.0, _sqrt(z))
    i = _sigmoid(gx)
    return r, i, e, a, z, mult, x * i * mult


@triton.jit
def _tile_gates(x_ptr, gx_ptr, ga_ptr, seg_ptr, ptrs, mask, in_t, offs_t, pid_b, seg_b, seg_t,
                sp, HAS_SEG: tl.constexpr, BLOCK_T: tl.constexpr,
                EVEN: tl.constexpr = False):  # fmt: skip
    """A tile's recurrence coefficients: (a, normalised gated x), padding a = 1, x = 0 (so it
    carries h through unchanged). EVEN: the tile lies wholly inside the tensors (no masks)."""
    if EVEN:
        x = tl.load(x_ptr + ptrs).to(tl.float32)
        gx = tl.load(gx_ptr + ptrs).to(tl.float32)
        ga = tl.load(ga_ptr + ptrs).to(tl.float32)
    else:
        x = tl.load(x_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        gx = tl.load(gx_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        ga = tl.load(ga_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_SEG:
        if EVEN:
            seg = tl.load(seg_ptr + pid_b * seg_b + offs_t * seg_t)
        else:
            seg = tl.load(seg_ptr + pid_b * seg_b + offs_t * seg_t, mask=in_t, other=1)
        reset = (seg == 0)[:, None]
    else:
        reset = tl.zeros([BLOCK_T, 1], dtype=tl.int1)
    _, _, _, a, _, _, xn = _gates(x, gx, ga, sp, reset)
    if EVEN:
        return a, xn
    return tl.where(mask, a, 1.0), tl.where(mask, xn, 0.0)


@triton.jit(do_not_specialize=["stride_d"])
def _rglru_fwd_kernel(
    # pointers
    x_ptr, gx_ptr, ga_ptr, aparam_ptr, seg_ptr, h0_ptr, y_ptr, hlast_ptr, aprod_ptr,
    # sizes
    T, D,
    # strides: x, gx, ga, y share them; segment_pos [b, t]; h0 / h_last / a_prod [b, d] contiguous
    stride_b, stride_t, stride_d, seg_b, seg_t,
    # meta-parameters
    HAS_SEG: tl.constexpr, HAS_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    CONTIG_D: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    SUMMARY: tl.constexpr = False,  # write a_prod (the product of a over t), not y
    EVEN: tl.constexpr = False,  # T and D multiples of the block: no masks
):  # fmt: skip
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)[None, :]
    sp = _softplus(tl.load(aparam_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32))
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D + offs_d, mask=mask_d, other=0.0)
    else:
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
    if SUMMARY:
        a_prod = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
    for t0 in tl.range(0, T, BLOCK_T, num_stages=NUM_STAGES):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        in_t = offs_t < T
        mask = in_t[:, None] & mask_d[None, :]
        ptrs = base + offs_t[:, None].to(tl.int64) * stride_t
        a, xn = _tile_gates(x_ptr, gx_ptr, ga_ptr, seg_ptr, ptrs, mask, in_t, offs_t, pid_b,
                            seg_b, seg_t, sp, HAS_SEG, BLOCK_T, EVEN)  # fmt: skip
        a_cum, x_cum = tl.associative_scan((a, xn), axis=0, combine_fn=_combine)
        hs = a_cum * h[None, :] + x_cum
        if SUMMARY:
            a_prod = a_prod * _last_row(a_cum, BLOCK_T)
        elif EVEN:
            tl.store(y_ptr + ptrs, hs.to(y_ptr.dtype.element_ty))
        else:
            tl.store(y_ptr + ptrs, hs.to(y_ptr.dtype.element_ty), mask=mask)
        h = _last_row(hs, BLOCK_T)
    tl.store(hlast_ptr + pid_b * D + offs_d, h, mask=mask_d)
    if SUMMARY:
        tl.store(aprod_ptr + pid_b * D + offs_d, a_prod, mask=mask_d)


@triton.jit(do_not_specialize=["stride_d"])
def _rglru_bwd_kernel(
    # pointers
    x_ptr, gx_ptr, ga_ptr, aparam_ptr, seg_ptr, h0_ptr, y_ptr, dy_ptr, dhlast_ptr,
    dx_ptr, dgx_ptr, dga_ptr, dsp_ptr, dh0_ptr,
    # sizes
    T, D,
    # strides: x, gx, ga, y, dy, dx, dgx, dga share them; segment_pos [b, t]
    stride_b, stride_t, stride_d, seg_b, seg_t,
    # meta-parameters
    HAS_SEG: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHLAST: tl.constexpr,
    MIN_4Z: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    CONTIG_D: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)[None, :]
    sp = _softplus(tl.load(aparam_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32))
    if HAS_DHLAST:
        delta = tl.load(dhlast_ptr + pid_b * D + offs_d, mask=mask_d, other=0.0)
    else:
        delta = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_H0:
        h0 = tl.load(h0_ptr + pid_b * D + offs_d, mask=mask_d, other=0.0)
    else:
        h0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    dsp = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_tiles = tl.cdiv(T, BLOCK_T)
    for k in tl.range(0, n_tiles, num_stages=NUM_STAGES):
        t0 = (n_tiles - 1 - k) * BLOCK_T
        offs_t = t0 + tl.arange(0, BLOCK_T)
        in_t = offs_t < T
        mask = in_t[:, None] & mask_d[None, :]
        ptrs = base + offs_t[:, None].to(tl.int64) * stride_t
        x = tl.load(x_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        gx = tl.load(gx_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        ga = tl.load(ga_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        # a_{t+1}: the gate one row down (mostly cache hits: the rows overlap this tile's)
        in_next = (offs_t + 1) < T
        next_mask = in_next[:, None] & mask_d[None, :]
        ga_next = tl.load(ga_ptr + ptrs + stride_t, mask=next_mask, other=0.0).to(tl.float32)
        if HAS_SEG:
            seg = tl.load(seg_ptr + pid_b * seg_b + offs_t * seg_t, mask=in_t, other=1)
            reset = (seg == 0)[:, None]
            seg_next = tl.load(
                seg_ptr + pid_b * seg_b + (offs_t + 1) * seg_t, mask=in_next, other=1
            )
            reset_next = (seg_next == 0)[:, None]
        else:
            reset = tl.zeros([BLOCK_T, 1], dtype=tl.int1)
            reset_next = tl.zeros([BLOCK_T, 1], dtype=tl.int1)
        r, i, e, a, z, mult, _ = _gates(x, gx, ga, sp, reset)
        a_next = tl.where(reset_next, 0.0, tl.exp(-8.0 * tl.sigmoid(ga_next) * sp[None, :]))
        # the last step and padding rows pass the carry through (c = 1, g = 0)
        c = tl.where(next_mask, a_next, 1.0)
        g = tl.load(dy_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        c_cum, g_cum = tl.associative_scan((c, g), axis=0, combine_fn=_combine, reverse=True)
        deltas = c_cum * delta[None, :] + g_cum
        prev_mask = (offs_t[:, None] >= 1) & mask
        h_prev = tl.load(y_ptr + ptrs - stride_t, mask=prev_mask, other=0.0).to(tl.float32)
        h_prev = tl.where(offs_t[:, None] == 0, h0[None, :], h_prev)
        d_a = tl.where(reset, 0.0, deltas * h_prev)
        d_mult = tl.where(reset, 0.0, deltas * x * i)
        d_z = d_mult * tl.rsqrt(tl.maximum(4.0 * z, MIN_4Z))
        d_log_a = d_a * a - 2.0 * d_z * (e * e)
        d_log_a = tl.where(mask, d_log_a, 0.0)
        tl.store(dx_ptr + ptrs, (deltas * i * mult).to(dx_ptr.dtype.element_ty), mask=mask)
        d_gx = deltas * x * mult * i * (1.0 - i)
        tl.store(dgx_ptr + ptrs, d_gx.to(dgx_ptr.dtype.element_ty), mask=mask)
        d_ga = d_log_a * (-8.0 * sp[None, :]) * r * (1.0 - r)
        tl.store(dga_ptr + ptrs, d_ga.to(dga_ptr.dtype.element_ty), mask=mask)
        dsp += tl.sum(d_log_a * (-8.0 * r), axis=0)
        delta = _first_row(deltas, BLOCK_T)
    tl.store(dsp_ptr + pid_b * D + offs_d, dsp, mask=mask_d)
    if HAS_H0:  # dh0 = a_0 δ_0, a_0 recomputed from the first gate
        first = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)
        ga0 = tl.load(ga_ptr + first, mask=mask_d, other=0.0).to(tl.float32)
        a_first = tl.exp(-8.0 * tl.sigmoid(ga0) * sp)
        if HAS_SEG:
            a_first = tl.where(tl.load(seg_ptr + pid_b * seg_b) == 0, 0.0, a_first)
        tl.store(dh0_ptr + pid_b * D + offs_d, a_first * delta, mask=mask_d)


def _seg_args(segment_pos, x):
    if segment_pos is None:
        return x, 0, 0  # any pointer: not read
    return segment_pos, segment_pos.stride(0), segment_pos.stride(1)


def _rglru_forward(x, gx, ga, a_param, segment_pos, h0, config=FWD_CONFIG, summary=False):
    """y, h_last; with summary=True no y: (h_last, a_prod), a_prod = the product of a over t."""
    b, t, d = x.shape
    block_t, block_d, warps, contig, stages = config
    h_last = torch.empty(b, d, device=x.device, dtype=torch.float32)
    y = h_last.new_empty(b, d) if summary else torch.empty_like(x)  # summary: a_prod
    seg, seg_b, seg_t = _seg_args(segment_pos, x)
    _rglru_fwd_kernel[(triton.cdiv(d, block_d), b)](
        x, gx, ga, a_param, seg, h0 if h0 is not None else h_last, y, h_last, y,
        t, d, x.stride(0), x.stride(1), x.stride(2), seg_b, seg_t,
        HAS_SEG=segment_pos is not None, HAS_H0=h0 is not None,
        BLOCK_T=block_t, BLOCK_D=block_d, CONTIG_D=contig, NUM_STAGES=stages, SUMMARY=summary,
        EVEN=EVEN_TILES and t % block_t == 0 and d % block_d == 0, num_warps=warps,
    )  # fmt: skip
    return (h_last, y) if summary else (y, h_last)


# Time-parallel forward for few sequences (prefill at batch 1): the kernel's grid is
# (channel blocks, batch), each program walking all of t, so B=1, D=2560 leaves 160 programs of
# 2 warps for 132 SMs and the time is one program's walk. Split t into chunks of >= MIN_CHUNK steps
# until there are about TARGET_PROGRAMS programs: a first pass gives each chunk's h_last (from
# h = 0) and its product of a, a small scan over chunks gives each chunk's incoming state, and a
# second pass writes y from it. Twice the reads (the second mostly from L2 at these sizes).
# Only where the plain kernel has fewer than PLAIN_PROGRAMS programs (about four per SM of an
# H100): at B=8, D=2560 its 640 one-warp programs (FWD_CONFIG) split in two made the inference
# forward 0.623 ms at T=4096 in the kernels-rglru suite, and 0.309 ms unsplit in the next run
# (H100, results/h100/kernels-rglru.jsonl at d266889; both graph-timed).
MIN_CHUNK = 64
TARGET_PROGRAMS = 2048
PLAIN_PROGRAMS = 512


def _time_chunks(b: int, t: int, d: int, block_d: int) -> int:
    """How many chunks to split t into (1: run the plain kernel)."""
    programs = b * triton.cdiv(d, block_d)
    if programs >= PLAIN_PROGRAMS:
        return 1
    chunks = 1
    while programs * chunks * 2 <= TARGET_PROGRAMS and t % (chunks * 2) == 0:
        if t // (chunks * 2) < MIN_CHUNK:
            break
        chunks *= 2
    return chunks


def _rglru_forward_time_parallel(x, gx, ga, a_param, segment_pos, h0, chunks):
    from kernels.scan import linear_scan

    b, t, d = x.shape
    n = b * chunks
    view = lambda u: u.view(n, t // chunks, d)  # noqa: E731 - chunks of each row, consecutive
    seg = None if segment_pos is None else segment_pos.view(n, t // chunks)
    h_end, a_prod = _rglru_forward(view(x), view(gx), view(ga), a_param, seg, None, summary=True)
    # state after each chunk: h_c = a_prod_c * h_{c-1} + h_end_c, from h0
    h_after, _ = linear_scan(a_prod.view(b, chunks, d), h_end.view(b, chunks, d), h0)
    start = h_after.new_zeros(b, chunks, d) if h0 is None else h0[:, None].expand(b, chunks, d)
    start = torch.cat([start[:, :1], h_after[:, :-1]], dim=1).reshape(n, d)
    y, _ = _rglru_forward(view(x), view(gx), view(ga), a_param, seg, start)
    return y.view(b, t, d), h_after[:, -1].contiguous()


def _rglru_backward(x, gx, ga, a_param, segment_pos, h0, y, dy, dh_last, config=BWD_CONFIG):
    b, t, d = x.shape
    block_t, block_d, warps, contig, stages = config
    dx, dgx, dga = torch.empty_like(x), torch.empty_like(gx), torch.empty_like(ga)
    dsp = torch.empty(b, d, device=x.device, dtype=torch.float32)
    dh0 = torch.empty(b, d, device=x.device, dtype=torch.float32) if h0 is not None else None
    seg, seg_b, seg_t = _seg_args(segment_pos, x)
    _rglru_bwd_kernel[(triton.cdiv(d, block_d), b)](
        x, gx, ga, a_param, seg, h0 if h0 is not None else dsp, y, dy,
        dh_last if dh_last is not None else dsp, dx, dgx, dga, dsp, dh0 if dh0 is not None else dsp,
        t, d, x.stride(0), x.stride(1), x.stride(2), seg_b, seg_t,
        HAS_SEG=segment_pos is not None, HAS_H0=h0 is not None, HAS_DHLAST=dh_last is not None,
        MIN_4Z=1.0 / MAX_SQRT_GRADIENT**2, BLOCK_T=block_t, BLOCK_D=block_d, CONTIG_D=contig, NUM_STAGES=stages, num_warps=warps,
    )  # fmt: skip
    d_a_param = (dsp.sum(0) * torch.sigmoid(a_param.float())).to(a_param.dtype)
    return dx, dgx, dga, d_a_param, dh0


class _RGLRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate_x, gate_a, a_param, segment_pos, h0):
        y, h_last = _rglru_forward(x, gate_x, gate_a, a_param, segment_pos, h0)
        ctx.save_for_backward(x, gate_x, gate_a, a_param, segment_pos, h0, y)
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        x, gx, ga, a_param, segment_pos, h0, y = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy.contiguous()
        dx, dgx, dga, dap, dh0 = _rglru_backward(
            x, gx, ga, a_param, segment_pos, h0, y, dy, dh_last
        )
        return dx, dgx, dga, dap, None, dh0


def rg_lru(
    x: torch.Tensor,
    gate_x: torch.Tensor,
    gate_a: torch.Tensor,
    a_param: torch.Tensor,
    segment_pos: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused Triton RG-LRU (forward and backward); same arguments and results as rg_lru_ref.

    x, gate_x, gate_a: [b, t, d] of one dtype (float32, bfloat16, float16); a_param: [d];
    segment_pos: int [b, t] or None; h0: float32 [b, d] or None. Returns y [b, t, d] in x.dtype
    and h_last float32 [b, d]; differentiable in x, gate_x, gate_a, a_param and h0. Called
    where no gradient is needed, with few sequences (prefill at batch 1), it splits time into
    chunks across programs (see _time_chunks).
    """
    _check(x, gate_x, gate_a, a_param, segment_pos, h0)
    if len({x.dtype, gate_x.dtype, gate_a.dtype}) != 1 or x.dtype not in (
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ):
        raise ValueError(
            "x, gate_x, gate_a must share one dtype of float32, bfloat16, float16; got "
            f"{x.dtype}, {gate_x.dtype}, {gate_a.dtype}"
        )
    if x.shape[1] == 0:
        raise ValueError("rg_lru needs at least one time step")
    x, gate_x, gate_a = x.contiguous(), gate_x.contiguous(), gate_a.contiguous()
    inputs = (x, gate_x, gate_a, a_param, h0)
    if not (torch.is_grad_enabled() and any(u is not None and u.requires_grad for u in inputs)):
        b, t, d = x.shape
        chunks = _time_chunks(b, t, d, FWD_CONFIG[1])
        if chunks > 1:  # no backward needed, few sequences: split time across programs
            return _rglru_forward_time_parallel(
                x, gate_x, gate_a, a_param.contiguous(),
                None if segment_pos is None else segment_pos.contiguous(),
                None if h0 is None else h0.contiguous(), chunks,
            )  # fmt: skip
    return _RGLRU.apply(
        x,
        gate_x,
        gate_a,
        a_param.contiguous(),
        None if segment_pos is None else segment_pos.contiguous(),
        None if h0 is None else h0.contiguous(),
    )


@triton.jit
def _rglru_step_kernel(
    x_ptr, gx_ptr, ga_ptr, aparam_ptr, reset_ptr, h_ptr, y_ptr,
    D,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = offs_d < D
    row = pid_b * D + offs_d
    reset = (tl.load(reset_ptr + pid_b) != 0) + tl.zeros([1, BLOCK_D], dtype=tl.int1)
    sp = _softplus(tl.load(aparam_ptr + offs_d, mask=mask, other=0.0).to(tl.float32))
    x = tl.load(x_ptr + row, mask=mask, other=0.0).to(tl.float32)[None, :]
    gx = tl.load(gx_ptr + row, mask=mask, other=0.0).to(tl.float32)[None, :]
    ga = tl.load(ga_ptr + row, mask=mask, other=0.0).to(tl.float32)[None, :]
    _, _, _, a, _, _, xn = _gates(x, gx, ga, sp, reset)
    h = tl.sum(a * tl.load(h_ptr + row, mask=mask, other=0.0)[None, :] + xn, axis=0)
    tl.store(h_ptr + row, h, mask=mask)
    tl.store(y_ptr + row, h.to(y_ptr.dtype.element_ty), mask=mask)


def _check_step(x, gate_x, gate_a, a_param, h, reset):
    if x.ndim != 2 or gate_x.shape != x.shape or gate_a.shape != x.shape or h.shape != x.shape:
        raise ValueError(
            "x, gate_x, gate_a and h must all be [b, d]; got "
            f"{list(x.shape)}, {list(gate_x.shape)}, {list(gate_a.shape)}, {list(h.shape)}"
        )
    if h.dtype != torch.float32 or reset.shape != (x.shape[0],) or a_param.shape != (x.shape[1],):
        raise ValueError("h must be float32 [b, d], reset bool [b] and a_param [d]")


def rg_lru_step_ref(x, gate_x, gate_a, a_param, h, reset):
    """One decode step, plain torch: h (float32 [b, d]) updated in place; reset bool [b] starts a
    document at this token. Returns y [b, d] in x.dtype."""
    _check_step(x, gate_x, gate_a, a_param, h, reset)
    y, h_new = rg_lru_ref(
        x[:, None], gate_x[:, None], gate_a[:, None], a_param, (~reset).long()[:, None], h
    )
    h.copy_(h_new)
    return y[:, 0]


def rg_lru_step(x, gate_x, gate_a, a_param, h, reset):
    """One decode step with a Triton kernel; same arguments and effect as rg_lru_step_ref.
    Writes `h` in place (so it must not be autotuned)."""
    _check_step(x, gate_x, gate_a, a_param, h, reset)
    if not all(t.is_contiguous() for t in (x, gate_x, gate_a, h)):
        raise ValueError("rg_lru_step needs contiguous inputs (h is updated in place)")
    bsz, d = x.shape
    y = torch.empty_like(x)
    block_d = 256
    _rglru_step_kernel[(triton.cdiv(d, block_d), bsz)](
        x, gate_x, gate_a, a_param.contiguous(), reset.to(torch.int8), h, y, d,
        BLOCK_D=block_d, num_warps=4,
    )  # fmt: skip
    return y
