"""One decode step of a recurrent block's middle, after its Conv1D: the two block-diagonal gate
layers, the RG-LRU step and gelu(y) * (its output), in one launch.

    z = rg_lru_gated_step(xs, y, wx, bx, wa, ba, a_param, h, reset)      # Triton; h updated in place
    z = rg_lru_gated_step_ref(xs, y, wx, bx, wa, ba, a_param, h, reset)  # plain torch, the same

xs [b, d]: the Conv1D step's output; y [b, d]: linear_y's output (the gelu branch); wx, wa
[H, e, e] and bx, ba [H, e] (e = d / H): the input and a gates (BlockDiagonalLinear); a_param [d];
h float32 [b, d]: the RG-LRU state, updated in place; reset bool [b]: a document starts here.

At batch 1 these were four to six launches per recurrent layer in the decode step (two strided
batched GEMVs for the gates, their copies, Inductor's kernel for the RG-LRU step and gelu·mul),
each a few microseconds for a few KB of data. Here a program takes a block of one head's gate
columns: it reads the head's e inputs and its columns of both gate weights, and finishes those
channels (gates, decay, state update, output, gelu·mul).
"""

from __future__ import annotations

import torch

from kernels._triton import tl, triton
from kernels.fused import _SQRT_2_OVER_PI, _tanh, gelu_mul_ref
from kernels.rglru import _gates, _softplus, rg_lru_step_ref


def _check(xs, y, wx, bx, wa, ba, a_param, h, reset):
    if xs.ndim != 2 or y.shape != xs.shape or h.shape != xs.shape:
        raise ValueError(
            f"xs, y and h must all be [b, d]; got {list(xs.shape)}, {list(y.shape)}, "
            f"{list(h.shape)}"
        )
    d = xs.shape[1]
    if wx.ndim != 3 or wx.shape[1] != wx.shape[2] or wx.shape[0] * wx.shape[1] != d:
        raise ValueError(f"wx must be [H, e, e] with H * e = {d}, got {list(wx.shape)}")
    n_heads, e = wx.shape[:2]
    if wa.shape != wx.shape or bx.shape != (n_heads, e) or ba.shape != (n_heads, e):
        raise ValueError(
            f"wa must be {list(wx.shape)} and bx, ba [{n_heads}, {e}]; got {list(wa.shape)}, "
            f"{list(bx.shape)}, {list(ba.shape)}"
        )
    if h.dtype != torch.float32 or reset.shape != (xs.shape[0],) or a_param.shape != (d,):
        raise ValueError("h must be float32 [b, d], reset bool [b] and a_param [d]")


def rg_lru_gated_step_ref(xs, y, wx, bx, wa, ba, a_param, h, reset):
    """The model's ops: block-diagonal gates, rg_lru_step_ref (h in place), gelu_mul_ref."""
    _check(xs, y, wx, bx, wa, ba, a_param, h, reset)
    xb = xs.unflatten(-1, (wx.shape[0], -1))
    gate_x = (torch.einsum("bhi,hij->bhj", xb, wx) + bx).flatten(-2)
    gate_a = (torch.einsum("bhi,hij->bhj", xb, wa) + ba).flatten(-2)
    return gelu_mul_ref(y, rg_lru_step_ref(xs, gate_x, gate_a, a_param, h, reset))


@triton.jit
def _gated_step_kernel(xs_ptr, y_ptr, wx_ptr, bx_ptr, wa_ptr, ba_ptr, aparam_ptr, reset_ptr,
                       h_ptr, z_ptr, D, E, C: tl.constexpr, KC: tl.constexpr,
                       BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):  # fmt: skip
    pid_j, pid_b = tl.program_id(0), tl.program_id(1)
    per_head = tl.cdiv(E, BLOCK_J)
    head = pid_j // per_head
    jj = (pid_j % per_head) * BLOCK_J + tl.arange(0, BLOCK_J)  # gate columns within the head
    jmask = jj < E
    ii = tl.arange(0, BLOCK_I)
    imask = ii < E
    row = pid_b.to(tl.int64) * D
    ch = head * E + jj
    # every load first, none waiting on another's result: in the H100 profile this kernel took
    # 5.5 us for 2.6 MB of gate weights (~1 us of bytes), so its memory round trips, not its
    # bytes, looked like its time (docs/h100.md; this change not measured)
    xin = tl.load(xs_ptr + row + head * E + ii, mask=imask, other=0.0).to(tl.float32)
    woff = head * E * E + ii[:, None] * E + jj[None, :]
    wmask = imask[:, None] & jmask[None, :]
    wx = tl.load(wx_ptr + woff, mask=wmask, other=0.0).to(tl.float32)
    wa = tl.load(wa_ptr + woff, mask=wmask, other=0.0).to(tl.float32)
    bx = tl.load(bx_ptr + ch, mask=jmask, other=0.0).to(tl.float32)
    ba = tl.load(ba_ptr + ch, mask=jmask, other=0.0).to(tl.float32)
    x = tl.load(xs_ptr + row + ch, mask=jmask, other=0.0).to(tl.float32)
    ap = tl.load(aparam_ptr + ch, mask=jmask, other=0.0).to(tl.float32)
    h0 = tl.load(h_ptr + row + ch, mask=jmask, other=0.0)
    g = tl.load(y_ptr + row + ch, mask=jmask, other=0.0).to(tl.float32)
    reset = (tl.load(reset_ptr + pid_b) != 0) + tl.zeros([1, BLOCK_J], dtype=tl.int1)
    gx = tl.sum(wx * xin[:, None], axis=0) + bx
    ga = tl.sum(wa * xin[:, None], axis=0) + ba
    _, _, _, a, _, _, xn = _gates(x[None, :], gx[None, :], ga[None, :], _softplus(ap), reset)
    h = tl.sum(a * h0[None, :] + xn, axis=0)
    tl.store(h_ptr + row + ch, h, mask=jmask)
    hv = h.to(z_ptr.dtype.element_ty).to(tl.float32)  # the step's output in the model's dtype
    t = _tanh(C * (g + KC * g * g * g))
    tl.store(z_ptr + row + ch, (0.5 * g * (1.0 + t) * hv).to(z_ptr.dtype.element_ty), mask=jmask)


def _int8(reset: torch.Tensor) -> torch.Tensor:
    """The reset flags as int8 for the kernel: a bool tensor reinterpreted (no copy kernel: as a
    conversion it was one more launch per recurrent layer in the decode step)."""
    if reset.dtype == torch.bool:
        return reset.contiguous().view(torch.int8)
    return reset.to(torch.int8)


def rg_lru_gated_step(xs, y, wx, bx, wa, ba, a_param, h, reset):
    """The fused step (see the module docstring); same arguments and effect as the _ref. Writes
    `h` in place (so it must not be autotuned). Returns z [b, d] in xs.dtype."""
    _check(xs, y, wx, bx, wa, ba, a_param, h, reset)
    if not (h.is_contiguous() and y.dtype == xs.dtype):
        raise ValueError("rg_lru_gated_step needs a contiguous h and y in xs's dtype")
    b, d = xs.shape
    e = wx.shape[1]
    block_j = 16  # 32-byte pieces of each gate row; d / 16 programs per sequence (160 at 2560)
    z = torch.empty_like(xs)
    _gated_step_kernel[(wx.shape[0] * triton.cdiv(e, block_j), b)](
        xs.contiguous(), y.contiguous(), wx.contiguous(), bx.contiguous(), wa.contiguous(),
        ba.contiguous(), a_param.contiguous(), _int8(reset), h, z, d, e,
        C=_SQRT_2_OVER_PI, KC=0.044715, BLOCK_I=triton.next_power_of_2(e), BLOCK_J=block_j,
        num_warps=4,
    )  # fmt: skip
    return z


# As a torch operator for the compiled decode step (see kernels.gemv): h is mutated in place.
@torch.library.custom_op("griffin_bench::rg_lru_gated_step", mutates_args=("h",))
def rg_lru_gated_step_op(
    xs: torch.Tensor,
    y: torch.Tensor,
    wx: torch.Tensor,
    bx: torch.Tensor,
    wa: torch.Tensor,
    ba: torch.Tensor,
    a_param: torch.Tensor,
    h: torch.Tensor,
    reset: torch.Tensor,
) -> torch.Tensor:
    return rg_lru_gated_step(xs, y, wx, bx, wa, ba, a_param, h, reset)


@rg_lru_gated_step_op.register_fake
def _(xs, y, wx, bx, wa, ba, a_param, h, reset):
    return torch.empty_like(xs)
