"""The RG-LRU (Real-Gated Linear Recurrent Unit) after its two gate layers.

    r_t = sigmoid(gate_a_t)            i_t = sigmoid(gate_x_t)
    log a_t = -8 * r_t * softplus(a_param)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

At a document start (segment_pos == 0) the state resets: a_t = 0 and the multiplier is 1. The
gradient of the sqrt is clipped at MAX_SQRT_GRADIENT as in the official code, so that a_t -> 1
does not blow up training in bfloat16. Same function as recurrentgemma's `RGLRU.forward` after
its `input_gate` / `a_gate` layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.scan import linear_scan_ref

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
    if h0 is not None and (h0.shape != (b, d) or h0.dtype != torch.float32):
        raise ValueError(f"h0 must be float32 [b, d] = [{b}, {d}], got {h0.dtype} {list(h0.shape)}")


def rg_lru_ref(
    x: torch.Tensor,
    gate_x: torch.Tensor,
    gate_a: torch.Tensor,
    a_param: torch.Tensor,
    segment_pos: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch RG-LRU, gates and scan in float32.

    Args:
      x, gate_x, gate_a: [b, t, d]; the gates are pre-sigmoid.
      a_param: [d], the Λ parameter (a = exp(-8 r softplus(Λ))).
      segment_pos: int [b, t] or None; 0 marks a document start (state reset).
      h0: float32 [b, d] or None.
    Returns:
      y: [b, t, d] in x.dtype; h_last: float32 [b, d].
    """
    _check(x, gate_x, gate_a, a_param, segment_pos, h0)
    log_a = -8.0 * torch.sigmoid(gate_a.float()) * F.softplus(a_param.float())
    a = torch.exp(log_a)
    multiplier = SqrtBoundDerivative.apply(1.0 - torch.exp(2.0 * log_a))
    if segment_pos is not None:
        reset = (segment_pos == 0)[..., None]
        a = torch.where(reset, 0.0, a)
        multiplier = torch.where(reset, 1.0, multiplier)
    normalized_x = x.float() * torch.sigmoid(gate_x.float()) * multiplier
    y, h_last = linear_scan_ref(a, normalized_x, h0)
    return y.to(x.dtype), h_last
