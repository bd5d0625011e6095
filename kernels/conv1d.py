"""Causal depthwise Conv1D of the recurrent block, with document-boundary masking.

    y_t = b + sum_{s=0}^{W-1} w[W-1-s] * x_{t-s}

where a tap x_{t-s} is dropped when a document starts in (t-s, t] (segment_pos == 0), exactly as
the official code masks it in training mode. `state` holds the W-1 inputs before the chunk, already
masked (entries from before the current document are zero), so prefill, decode and a full forward
compute the same function.

    y, state = conv1d(x, w, b, segment_pos=None, state=None)       # Triton forward and backward
    y, state = conv1d_ref(x, w, b, segment_pos=None, state=None)   # plain torch
    y = conv1d_step(x, w, b, state, reset)                        # one decode step, state in place

The Triton forward reads x once from memory (the W shifted tile loads overlap in cache) and writes
y; the backward reads dy and x and writes dx, with dw and db reduced per batch row in the kernel.
Gradients flow to x, w and b (the incoming state is treated as a constant).
"""

from __future__ import annotations

import torch

from kernels._triton import tl, triton
from kernels.scan import _d_offsets


def _check(x, w, b, segment_pos, state) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must be [b, t, e], got {list(x.shape)}")
    bsz, t, e = x.shape
    if w.ndim != 2 or w.shape[1] != e or b.shape != (e,):
        raise ValueError(f"w must be [W, e={e}] and b [e]; got {list(w.shape)}, {list(b.shape)}")
    if segment_pos is not None and segment_pos.shape != (bsz, t):
        raise ValueError(
            f"segment_pos must be [b, t] = [{bsz}, {t}], got {list(segment_pos.shape)}"
        )
    if state is not None and state.shape != (bsz, w.shape[0] - 1, e):
        raise ValueError(
            f"state must be [b, W-1, e] = [{bsz}, {w.shape[0] - 1}, {e}], got {list(state.shape)}"
        )


def conv1d_ref(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    segment_pos: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference causal depthwise conv.

    Args:
      x: [b, t, e]. w: [W, e] (w[W-1] multiplies the current token). b: [e].
      segment_pos: int [b, t] or None; 0 marks a document start.
      state: [b, W-1, e] inputs preceding the chunk (masked), or None (zeros).
    Returns:
      y: [b, t, e] in x.dtype; new_state: [b, W-1, e] in x.dtype, masked to the last document.
    """
    _check(x, w, b, segment_pos, state)
    bsz, t, e = x.shape
    width = w.shape[0]
    if state is None:
        state = x.new_zeros(bsz, width - 1, e)
    xx = torch.cat([state.to(x.dtype), x], dim=1)  # [b, W-1+t, e]
    # Document id of every position; the state belongs to the document before the chunk's first
    # reset (id 0). A tap is kept when it lies in the same document as the output position.
    if segment_pos is None:
        doc = torch.zeros(bsz, width - 1 + t, dtype=torch.int64, device=x.device)
    else:
        doc = torch.cumsum((segment_pos == 0).long(), dim=1)
        doc = torch.cat([doc.new_zeros(bsz, width - 1), doc], dim=1)
    doc_out = doc[:, width - 1 :]
    y = b.to(x.dtype).expand(bsz, t, e).clone()
    for shift in range(width):
        start = width - 1 - shift
        tap = xx[:, start : start + t]
        keep = (doc[:, start : start + t] == doc_out)[..., None]
        y = y + torch.where(keep, tap, 0.0) * w[width - 1 - shift]
    new_state = xx[:, t:]
    new_state = torch.where((doc[:, t:] == doc[:, -1:])[..., None], new_state, 0.0)
    return y, new_state


# (BLOCK_T, BLOCK_D, num_warps, CONTIG_D, NUM_STAGES), as for kernels.scan
FWD_CONFIG = (64, 32, 2, True, 1)
BWD_CONFIG = (64, 64, 2, True, 1)


@triton.jit
def _resets(seg_ptr, seg_b, seg_t, pid_b, offs_t, shift: tl.constexpr, T):
    """1 where a document starts at t - shift (within [0, T)), else 0; [BLOCK_T, 1]."""
    t = offs_t - shift
    seg = tl.load(seg_ptr + pid_b * seg_b + t * seg_t, mask=(t >= 0) & (t < T), other=1)
    return (seg == 0)[:, None]


@triton.jit(do_not_specialize=["stride_d"])
def _conv_fwd_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, seg_ptr, state_ptr, y_ptr, new_state_ptr,
    # sizes: program (d block, row b, chunk c) takes steps c * T_CHUNK .. (c + 1) * T_CHUNK - 1
    T, D, T_CHUNK,
    # strides: x and y share them; segment_pos [b, t]; state, new_state [b, W-1, d] contiguous
    stride_b, stride_t, stride_d, seg_b, seg_t,
    # meta-parameters
    W: tl.constexpr, HAS_SEG: tl.constexpr, HAS_STATE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    CONTIG_D: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b, pid_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)[None, :]
    bias = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    t_start = pid_c * T_CHUNK  # T_CHUNK is a multiple of BLOCK_T: tiles never cross chunks
    for t0 in tl.range(t_start, tl.minimum(t_start + T_CHUNK, T), BLOCK_T, num_stages=NUM_STAGES):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask = (offs_t[:, None] < T) & mask_d[None, :]
        acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32) + bias[None, :]
        keep = tl.full([BLOCK_T, 1], 1, dtype=tl.int1)
        for s in tl.static_range(W):
            if s > 0 and HAS_SEG:  # a document starting at t - s + 1 cuts taps s and beyond
                keep = keep & ~_resets(seg_ptr, seg_b, seg_t, pid_b, offs_t, s - 1, T)
            src = offs_t - s
            tap = tl.load(
                x_ptr + base + src[:, None].to(tl.int64) * stride_t,
                mask=(src[:, None] >= 0) & mask,
                other=0.0,
            ).to(tl.float32)
            if HAS_STATE:  # inputs before the chunk
                j = src + (W - 1)
                tap += tl.load(
                    state_ptr + pid_b * (W - 1) * D + j[:, None] * D + offs_d[None, :],
                    mask=(src[:, None] < 0) & (j[:, None] >= 0) & mask,
                    other=0.0,
                ).to(tl.float32)
            w = tl.load(w_ptr + (W - 1 - s) * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            acc += tl.where(keep, tap, 0.0) * w[None, :]
        tl.store(y_ptr + base + offs_t[:, None].to(tl.int64) * stride_t,
                 acc.to(y_ptr.dtype.element_ty), mask=mask)  # fmt: skip
    if pid_c == tl.num_programs(2) - 1:  # the last chunk's programs write the new state
        _conv_new_state(x_ptr, seg_ptr, state_ptr, new_state_ptr, pid_b, offs_d, mask_d, T, D,
                        stride_b, stride_d, stride_t, seg_b, seg_t,
                        W, HAS_SEG, HAS_STATE, CONTIG_D)  # fmt: skip


@triton.jit
def _conv_new_state(
    x_ptr, seg_ptr, state_ptr, new_state_ptr, pid_b, offs_d, mask_d, T, D,
    stride_b, stride_d, stride_t, seg_b, seg_t,
    W: tl.constexpr, HAS_SEG: tl.constexpr, HAS_STATE: tl.constexpr, CONTIG_D: tl.constexpr,
):  # fmt: skip
    # The new state: the chunk's last W-1 inputs (the old state's where the chunk is shorter),
    # zeroed where a document starts after them.
    row = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)
    for j in tl.static_range(W - 1):
        p = T - (W - 1) + j
        pv = p + 0 * offs_d  # as a vector, so that the masks below are vectors
        v = tl.load(x_ptr + row + p * stride_t, mask=mask_d & (pv >= 0), other=0.0).to(tl.float32)
        if HAS_STATE:
            v += tl.load(state_ptr + pid_b * (W - 1) * D + (p + W - 1) * D + offs_d,
                         mask=mask_d & (pv < 0), other=0.0).to(tl.float32)  # fmt: skip
        if HAS_SEG:
            for i in tl.static_range(W - 1):  # a start at q in (p, T) cuts input p off
                q = T - 1 - i
                # (read per channel lane, one address: a scalar load with a mask per program)
                start = tl.load(seg_ptr + pid_b * seg_b + q * seg_t + 0 * offs_d,
                                mask=mask_d & (pv < q) & (pv + (q - p) >= 0), other=1) == 0  # fmt: skip
                v = tl.where(start, 0.0, v)
        tl.store(new_state_ptr + pid_b * (W - 1) * D + j * D + offs_d,
                 v.to(new_state_ptr.dtype.element_ty), mask=mask_d)  # fmt: skip


@triton.jit(do_not_specialize=["stride_d"])
def _conv_bwd_kernel(
    # pointers
    x_ptr, w_ptr, seg_ptr, state_ptr, dy_ptr, dx_ptr, dw_ptr, db_ptr,
    # sizes: program (d block, row b, chunk c) takes steps c * T_CHUNK .. (c + 1) * T_CHUNK - 1
    T, D, T_CHUNK,
    # strides: x, dy, dx share them; segment_pos [b, t]; state [b, W-1, d]; dw, db partial sums
    # [b * chunks, W, d] and [b * chunks, d] (contiguous)
    stride_b, stride_t, stride_d, seg_b, seg_t,
    # meta-parameters
    W: tl.constexpr, W_POW2: tl.constexpr, HAS_SEG: tl.constexpr, HAS_STATE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    CONTIG_D: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b, pid_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    part_row = pid_b * tl.num_programs(2) + pid_c  # this program's row of the dw, db partials
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)[None, :]
    db = tl.zeros([BLOCK_D], dtype=tl.float32)
    # dw partials of this batch row stay in registers (row k: tap k); written once at the end,
    # so the kernel only writes its outputs (safe to rerun, e.g. by an autotuner)
    taps = tl.arange(0, W_POW2)[:, None]
    dw = tl.zeros([W_POW2, BLOCK_D], dtype=tl.float32)
    t_start = pid_c * T_CHUNK  # T_CHUNK is a multiple of BLOCK_T: tiles never cross chunks
    for t0 in tl.range(t_start, tl.minimum(t_start + T_CHUNK, T), BLOCK_T, num_stages=NUM_STAGES):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask = (offs_t[:, None] < T) & mask_d[None, :]
        ptrs = base + offs_t[:, None].to(tl.int64) * stride_t
        dy_t = tl.load(dy_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        db += tl.sum(dy_t, axis=0)
        # dx_t = sum_s w[W-1-s] dy_{t+s} keep(t+s, s); keep(u, s): no reset in (u-s, u]
        dx = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
        for s in tl.static_range(W):
            dst = offs_t + s
            dy = tl.load(dy_ptr + base + dst[:, None].to(tl.int64) * stride_t,
                         mask=(dst[:, None] < T) & mask, other=0.0).to(tl.float32)  # fmt: skip
            keep = tl.full([BLOCK_T, 1], 1, dtype=tl.int1)
            if HAS_SEG:
                for q in tl.static_range(s):  # resets at t+1 .. t+s
                    keep = keep & ~_resets(seg_ptr, seg_b, seg_t, pid_b, offs_t, -(q + 1), T)
            w = tl.load(w_ptr + (W - 1 - s) * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            dx += tl.where(keep, dy, 0.0) * w[None, :]
        tl.store(dx_ptr + ptrs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        # dw[W-1-s] += sum_t dy_t x_{t-s} keep(t, s)
        keep = tl.full([BLOCK_T, 1], 1, dtype=tl.int1)
        for s in tl.static_range(W):
            if s > 0 and HAS_SEG:
                keep = keep & ~_resets(seg_ptr, seg_b, seg_t, pid_b, offs_t, s - 1, T)
            src = offs_t - s
            tap = tl.load(x_ptr + base + src[:, None].to(tl.int64) * stride_t,
                          mask=(src[:, None] >= 0) & mask, other=0.0).to(tl.float32)  # fmt: skip
            if HAS_STATE:
                j = src + (W - 1)
                tap += tl.load(
                    state_ptr + pid_b * (W - 1) * D + j[:, None] * D + offs_d[None, :],
                    mask=(src[:, None] < 0) & (j[:, None] >= 0) & mask,
                    other=0.0,
                ).to(tl.float32)
            part = tl.sum(tl.where(keep, tap, 0.0) * dy_t, axis=0)
            dw += tl.where(taps == W - 1 - s, part[None, :], 0.0)
    tl.store(
        dw_ptr + part_row * W * D + taps * D + offs_d[None, :],
        dw,
        mask=(taps < W) & mask_d[None, :],
    )
    tl.store(db_ptr + part_row * D + offs_d, db, mask=mask_d)


def _seg(segment_pos, x):
    if segment_pos is None:
        return x, 0, 0  # any pointer: not read
    return segment_pos, segment_pos.stride(0), segment_pos.stride(1)


# A convolution is parallel in time (the backward's dw and db are sums over it): both kernels
# split t into chunks until there are about TARGET_PROGRAMS programs (the backward's each writing
# its own partial dw, db, summed after). One program per (channel block, row) walking all of t
# left 320 backward programs at B=8, D=2560: on the H100 (regression gate at 2e5132b) forward +
# backward took 0.48-0.73 ms at T=2048 and the forward alone 0.10-0.11 ms, so the backward
# ~0.4-0.6 ms against 0.084 ms of bytes; the forward's bytes take 0.056 ms.
TARGET_PROGRAMS = 2048


def _time_chunks(b: int, t: int, d: int, block_t: int, block_d: int) -> tuple[int, int]:
    """(chunks, steps per chunk, a multiple of block_t) for a kernel's grid."""
    tiles = triton.cdiv(t, block_t)
    want = triton.cdiv(TARGET_PROGRAMS, triton.cdiv(d, block_d) * b)
    t_chunk = triton.cdiv(tiles, max(1, min(tiles, want))) * block_t
    return triton.cdiv(t, t_chunk), t_chunk


class _Conv1D(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, segment_pos, state):
        bsz, t, d = x.shape
        width = w.shape[0]
        block_t, block_d, warps, contig, stages = FWD_CONFIG
        y = torch.empty_like(x)
        new_state = torch.empty(bsz, width - 1, d, device=x.device, dtype=x.dtype)
        seg, seg_b, seg_t = _seg(segment_pos, x)
        chunks, t_chunk = _time_chunks(bsz, t, d, block_t, block_d)
        _conv_fwd_kernel[(triton.cdiv(d, block_d), bsz, chunks)](
            x, w, b, seg, state if state is not None else x, y, new_state,
            t, d, t_chunk, x.stride(0), x.stride(1), x.stride(2), seg_b, seg_t,
            W=width, HAS_SEG=segment_pos is not None, HAS_STATE=state is not None,
            BLOCK_T=block_t, BLOCK_D=block_d, CONTIG_D=contig, NUM_STAGES=stages, num_warps=warps,
        )  # fmt: skip
        ctx.save_for_backward(x, w, segment_pos, state)
        ctx.mark_non_differentiable(new_state)
        return y, new_state

    @staticmethod
    def backward(ctx, dy, _d_new_state):
        x, w, segment_pos, state = ctx.saved_tensors
        bsz, t, d = x.shape
        width = w.shape[0]
        block_t, block_d, warps, contig, stages = BWD_CONFIG
        dy = dy.contiguous()
        dx = torch.empty_like(x)
        chunks, t_chunk = _time_chunks(bsz, t, d, block_t, block_d)
        dw = torch.empty(bsz * chunks, width, d, device=x.device, dtype=torch.float32)
        db = torch.empty(bsz * chunks, d, device=x.device, dtype=torch.float32)
        seg, seg_b, seg_t = _seg(segment_pos, x)
        _conv_bwd_kernel[(triton.cdiv(d, block_d), bsz, chunks)](
            x, w, seg, state if state is not None else x, dy, dx, dw, db,
            t, d, t_chunk, x.stride(0), x.stride(1), x.stride(2), seg_b, seg_t,
            W=width, W_POW2=triton.next_power_of_2(width), HAS_SEG=segment_pos is not None, HAS_STATE=state is not None,
            BLOCK_T=block_t, BLOCK_D=block_d, CONTIG_D=contig, NUM_STAGES=stages, num_warps=warps,
        )  # fmt: skip
        return dx, dw.sum(0).to(w.dtype), db.sum(0).to(w.dtype), None, None


def conv1d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    segment_pos: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton causal depthwise conv; same arguments and results as conv1d_ref."""
    _check(x, w, b, segment_pos, state)
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError("conv1d needs at least one time step")
    x = x.contiguous()
    seg = None if segment_pos is None else segment_pos.contiguous()
    st = None if state is None else state.detach().to(x.dtype).contiguous()
    return _Conv1D.apply(x, w.contiguous(), b.contiguous(), seg, st)


@triton.jit
def conv_step_tile(x, offs, mask, w_ptr, b_ptr, state_ptr, reset, D, W: tl.constexpr):
    """The Conv1D decode step on one tile of channels `offs` (< D where `mask`): x float32, this
    token's inputs; state_ptr: this row's [W-1, D] state, shifted in place (cut first where
    `reset`), x appended. Returns the float32 outputs. Shared by _conv_step_kernel and the GEMV's
    Conv1D epilogue (kernels.gemv)."""
    acc = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    acc += x * tl.load(w_ptr + (W - 1) * D + offs, mask=mask, other=0.0).to(tl.float32)
    row = state_ptr + offs
    for j in tl.static_range(W - 1):  # row j holds x_{t-(W-1)+j}: row j moves to j - 1
        s = tl.load(row + j * D, mask=mask, other=0.0).to(tl.float32)
        s = tl.where(reset, 0.0, s)
        acc += s * tl.load(w_ptr + j * D + offs, mask=mask, other=0.0).to(tl.float32)
        if j > 0:  # row j - 1 was read in the previous iteration
            tl.store(row + (j - 1) * D, s.to(state_ptr.dtype.element_ty), mask=mask)
    if W > 1:
        tl.store(row + (W - 2) * D, x.to(state_ptr.dtype.element_ty), mask=mask)
    return acc


@triton.jit
def _conv_step_kernel(
    x_ptr, w_ptr, b_ptr, state_ptr, reset_ptr, y_ptr,
    D,
    W: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = offs_d < D
    reset = tl.load(reset_ptr + pid_b) != 0
    x = tl.load(x_ptr + pid_b * D + offs_d, mask=mask, other=0.0).to(tl.float32)
    acc = conv_step_tile(x, offs_d, mask, w_ptr, b_ptr, state_ptr + pid_b * (W - 1) * D, reset,
                         D, W)  # fmt: skip
    tl.store(y_ptr + pid_b * D + offs_d, acc.to(y_ptr.dtype.element_ty), mask=mask)


def _check_step(x, w, b, state, reset):
    if x.ndim != 2 or state.shape != (x.shape[0], w.shape[0] - 1, x.shape[1]):
        raise ValueError(
            f"x must be [b, e] and state [b, W-1, e]; got {list(x.shape)}, {list(state.shape)}"
        )
    if reset.shape != (x.shape[0],):
        raise ValueError(f"reset must be [b] = [{x.shape[0]}], got {list(reset.shape)}")


def conv1d_step_ref(x, w, b, state, reset):
    """One decode step, plain torch: x [b, e] (one token), state [b, W-1, e] updated in place,
    reset bool [b] (a document starts at this token: the state is cut first). Returns y [b, e]."""
    _check_step(x, w, b, state, reset)
    prev = torch.where(reset[:, None, None], 0.0, state.to(x.dtype))
    window = torch.cat([prev, x[:, None]], dim=1)  # [b, W, e]
    y = (window.float() * w[None].float()).sum(1) + b.float()
    state.copy_(window[:, 1:].to(state.dtype))
    return y.to(x.dtype)


def conv1d_step(x, w, b, state, reset):
    """One decode step with a Triton kernel; same arguments and effect as conv1d_step_ref.
    Writes `state` in place (so it must not be autotuned: a tuning rerun would shift it twice)."""
    _check_step(x, w, b, state, reset)
    if not (x.is_contiguous() and state.is_contiguous()):
        raise ValueError("conv1d_step needs contiguous x and state (the state is updated in place)")
    bsz, d = x.shape
    y = torch.empty_like(x)
    block_d = 128
    _conv_step_kernel[(triton.cdiv(d, block_d), bsz)](
        x, w.contiguous(), b.contiguous(), state, reset.to(torch.int8), y, d,
        W=w.shape[0], BLOCK_D=block_d, num_warps=4,
    )  # fmt: skip
    return y
