"""Fused elementwise kernels of the residual blocks: RMSNorm and the gated GeLU product.

    y = rms_norm(x, scale, eps)        # x / rms(x) * (1 + scale), over the last dim
    y = rms_norm_ref(x, scale, eps)    # the same in plain torch (models.torch.layers.RMSNorm)
    z = gelu_mul(gate, up)             # gelu_tanh(gate) * up
    z = gelu_mul_ref(gate, up)

Eager torch runs each as a chain of small kernels and saves every intermediate for the backward
pass (RMSNorm: x², the mean, its rsqrt, x·rsqrt; gelu·mul: gelu(gate)). These kernels read
their inputs once, write the output once, compute in float32, and save only the inputs (plus one
float32 rstd per row for RMSNorm); the backward kernels recompute the rest. That matters for
memory in training (the saved activations of RecurrentGemma-2B at B=8 T=2048) as much as for time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels._triton import tl, triton

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def rms_norm_ref(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x², -1) + eps) * (1 + scale), computed in x.dtype (as the reference model)."""
    var = torch.mean(torch.square(x), dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * (scale + 1)


def gelu_mul_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gelu(gate) * up with the tanh approximation (as the official code and Gemma)."""
    return F.gelu(gate, approximate="tanh") * up


@triton.jit
def _rms_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, N, D, eps,
                    BLOCK_D: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    w = 1.0 + tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rows < N)


@triton.jit
def _rms_bwd_kernel(x_ptr, w_ptr, rstd_ptr, dy_ptr, dx_ptr, dw_ptr, N, D,
                    BLOCK_D: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + rows, mask=rows < N, other=0.0)
    w = 1.0 + tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    xhat = x * rstd[:, None]
    g = dy * w[None, :]
    # y = xhat * w with xhat = x * rstd: dx = rstd * (g - xhat * mean(g * xhat))
    dx = rstd[:, None] * (g - xhat * (tl.sum(g * xhat, axis=1) / D)[:, None])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid * D + cols, tl.sum(dy * xhat, axis=0), mask=cols < D)  # per program


def _rows_per_program(d: int) -> int:
    return max(1, min(16, 8192 // triton.next_power_of_2(d)))


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, eps):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        n, d = x2.shape
        y = torch.empty_like(x2)
        rstd = torch.empty(n, device=x.device, dtype=torch.float32)
        rows = _rows_per_program(d)
        block = triton.next_power_of_2(d)
        _rms_fwd_kernel[(triton.cdiv(n, rows),)](
            x2, scale, y, rstd, n, d, eps, BLOCK_D=block, ROWS=rows, num_warps=4 if block <= 4096 else 8,
        )  # fmt: skip
        ctx.save_for_backward(x2, scale, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, scale, rstd = ctx.saved_tensors
        n, d = x2.shape
        dy = dy.reshape(n, d).contiguous()
        dx = torch.empty_like(x2)
        rows = _rows_per_program(d)
        programs = triton.cdiv(n, rows)
        dw = torch.empty(programs, d, device=x2.device, dtype=torch.float32)
        block = triton.next_power_of_2(d)
        _rms_bwd_kernel[(programs,)](
            x2, scale, rstd, dy, dx, dw, n, d, BLOCK_D=block, ROWS=rows, num_warps=4 if block <= 4096 else 8,
        )  # fmt: skip
        return dx.reshape(ctx.shape), dw.sum(0).to(scale.dtype), None


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The fused RMSNorm (Triton forward and backward); same function as rms_norm_ref, computed in
    float32 and returned in x.dtype. x: [..., d] (any leading shape); scale: [d]."""
    if x.shape[-1:] != scale.shape:
        raise ValueError(f"scale must be [{x.shape[-1]}], got {list(scale.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    return _RMSNorm.apply(x.contiguous(), scale.contiguous(), float(eps))


@triton.jit
def _tanh(u):
    # 1 - 2 / (exp(2u) + 1), with u clamped where tanh is already ±1 in float32
    u = tl.minimum(tl.maximum(u, -15.0), 15.0)
    return 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)


@triton.jit
def _gelu_mul_fwd_kernel(g_ptr, u_ptr, z_ptr, N, C: tl.constexpr, K: tl.constexpr,
                         BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = _tanh(C * (g + K * g * g * g))
    tl.store(z_ptr + offs, (0.5 * g * (1.0 + t) * u).to(z_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_mul_bwd_kernel(g_ptr, u_ptr, dz_ptr, dg_ptr, du_ptr, N, C: tl.constexpr,
                         K: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dz = tl.load(dz_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = _tanh(C * (g + K * g * g * g))
    gelu = 0.5 * g * (1.0 + t)
    dgelu = 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * C * (1.0 + 3.0 * K * g * g)
    tl.store(dg_ptr + offs, (dz * u * dgelu).to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(du_ptr + offs, (dz * gelu).to(du_ptr.dtype.element_ty), mask=mask)


_GELU_BLOCK = 1024


class _GeluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        z = torch.empty_like(gate)
        n = gate.numel()
        _gelu_mul_fwd_kernel[(triton.cdiv(n, _GELU_BLOCK),)](
            gate, up, z, n, C=_SQRT_2_OVER_PI, K=0.044715, BLOCK=_GELU_BLOCK, num_warps=4
        )
        ctx.save_for_backward(gate, up)
        return z

    @staticmethod
    def backward(ctx, dz):
        gate, up = ctx.saved_tensors
        dz = dz.contiguous()
        dg, du = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        _gelu_mul_bwd_kernel[(triton.cdiv(n, _GELU_BLOCK),)](
            gate, up, dz, dg, du, n, C=_SQRT_2_OVER_PI, K=0.044715, BLOCK=_GELU_BLOCK, num_warps=4
        )
        return dg, du


def gelu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(gate) * up in one Triton pass (and one backward pass); same as gelu_mul_ref,
    computed in float32, returned in gate.dtype. gate and up: the same shape and dtype."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(
            f"gate and up must share shape and dtype; got {list(gate.shape)} {gate.dtype}, "
            f"{list(up.shape)} {up.dtype}"
        )
    return _GeluMul.apply(gate.contiguous(), up.contiguous())
