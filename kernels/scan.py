"""Diagonal linear recurrence `h_t = a_t * h_{t-1} + x_t` over [b, t, d] tensors.

The state is carried in float32 whatever the input dtype; outputs are cast back to x.dtype.
"""

from __future__ import annotations

import torch


def _check(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None) -> None:
    if x.ndim != 3 or a.shape != x.shape:
        raise ValueError(
            f"a and x must both be [b, t, d]; got a {tuple(a.shape)}, x {tuple(x.shape)}"
        )
    if h0 is not None and (h0.shape != (x.shape[0], x.shape[2]) or h0.dtype != torch.float32):
        raise ValueError(
            f"h0 must be float32 [b, d] = {[x.shape[0], x.shape[2]]}; got {h0.dtype} {list(h0.shape)}"
        )


def linear_scan_ref(
    a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference scan: a loop over time in float32.

    Args:
      a, x: [b, t, d], any float dtype.
      h0: float32 [b, d] or None (zeros).
    Returns:
      h: [b, t, d] in x.dtype; h_last: float32 [b, d].
    """
    _check(a, x, h0)
    h = torch.zeros_like(x[:, 0], dtype=torch.float32) if h0 is None else h0
    out = []
    for t in range(x.shape[1]):
        h = a[:, t].float() * h + x[:, t].float()
        out.append(h.to(x.dtype))
    ys = torch.stack(out, dim=1) if out else x.new_empty(x.shape)
    return ys, h
