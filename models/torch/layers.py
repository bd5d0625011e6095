"""Layers of the reference model (PyTorch). Mirrors models/jax/layers.py function for function.

Shapes: b batch, t time, d width, e RG-LRU width, n heads, h head dim, s cache slots, m MLP width.
Parameter names and layouts follow the official recurrentgemma torch code, so its state_dict maps
onto ours almost key for key (see convert.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GeLU, tanh approximation (as the official code and Gemma use)."""
    return F.gelu(x, approximate="tanh")


class RMSNorm(nn.Module):
    """x / rms(x) * (1 + scale); scale starts at zero."""

    def __init__(self, width: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.zeros(width, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d] -> [..., d]
        var = torch.mean(torch.square(x), dim=-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * (self.scale + 1)


class BlockDiagonalLinear(nn.Module):
    """Block-diagonal linear layer: `num_blocks` independent [e/k, e/k] maps plus bias."""

    def __init__(self, width: int, num_blocks: int, device=None, dtype=None):
        super().__init__()
        self.num_blocks = num_blocks
        bw = width // num_blocks
        self.w = nn.Parameter(torch.empty(num_blocks, bw, bw, device=device, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(num_blocks, bw, device=device, dtype=dtype))
        nn.init.normal_(self.w, std=math.sqrt(1.0 / bw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, t, e] -> [b, t, e]
        xb = x.unflatten(-1, (self.num_blocks, -1))
        y = torch.einsum("...hi,hij->...hj", xb, self.w) + self.b
        return y.flatten(-2)


class Conv1D(nn.Module):
    """Parameters of the causal depthwise Conv1D; the op is kernels.conv1d."""

    def __init__(self, width: int, temporal_width: int, device=None, dtype=None):
        super().__init__()
        self.w = nn.Parameter(torch.empty(temporal_width, width, device=device, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(width, device=device, dtype=dtype))
        nn.init.normal_(self.w, std=math.sqrt(0.01 / temporal_width))


def init_a_param_(a_param: torch.Tensor, min_rad: float = 0.9, max_rad: float = 0.999) -> None:
    """The official initialisation: Λ such that exp(-softplus(Λ)) (a at gate r = 1/8) is uniform
    by area on the ring [min_rad, max_rad]."""
    with torch.no_grad():
        a_param.uniform_(min_rad**2 + 1e-8, max_rad**2 + 1e-8)
        a_param.log_().mul_(0.5)  # log of the radius
        a_param.neg_().exp_().sub_(1.0).log_()  # inverse softplus of -log(radius)


class RGLRUParams(nn.Module):
    """Parameters of the RG-LRU: Λ and the two block-diagonal gate layers."""

    def __init__(self, width: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        self.a_param = nn.Parameter(torch.empty(width, device=device, dtype=dtype))
        self.input_gate = BlockDiagonalLinear(width, num_heads, device=device, dtype=dtype)
        self.a_gate = BlockDiagonalLinear(width, num_heads, device=device, dtype=dtype)
        init_a_param_(self.a_param)


class GatedUp(nn.Module):
    """The MLP's two up projections in one weight: w [2, d, m] (gate branch first), b [2, m]."""

    def __init__(self, width: int, expanded: int, bias: bool, device=None, dtype=None):
        super().__init__()
        self.w = nn.Parameter(torch.empty(2, width, expanded, device=device, dtype=dtype))
        self.b = (
            nn.Parameter(torch.zeros(2, expanded, device=device, dtype=dtype)) if bias else None
        )
        nn.init.normal_(self.w, std=math.sqrt(1.0 / width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, t, d] -> [2, b, t, m]
        up = torch.einsum("btd,cdm->cbtm", x, self.w)
        return up if self.b is None else up + self.b[:, None, None]


class MLPBlock(nn.Module):
    """Gated MLP: ffw_down(gelu(x W0 + b0) * (x W1 + b1))."""

    def __init__(
        self, width: int, expanded: int, bias: bool, out_scale: float, device=None, dtype=None
    ):
        super().__init__()
        self.ffw_up = GatedUp(width, expanded, bias, device=device, dtype=dtype)
        self.ffw_down = nn.Linear(expanded, width, bias=bias, device=device, dtype=dtype)
        nn.init.normal_(self.ffw_down.weight, std=math.sqrt(out_scale / expanded))
        if bias:
            nn.init.zeros_(self.ffw_down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, t, d] -> [b, t, d]
        up = self.ffw_up(x)
        return self.ffw_down(gelu(up[0]) * up[1])


def apply_rope(
    x: torch.Tensor, positions: torch.Tensor, rope_dims: int, base: float
) -> torch.Tensor:
    """Rotary embedding on the first `rope_dims` channels of each head (rotate-half layout).

    x: [b, t, n, h]; positions: int [b, t] (the segment position: RoPE restarts per document).
    """
    x_rope, x_pass = x[..., :rope_dims], x[..., rope_dims:]
    freq = torch.arange(rope_dims // 2, device=x.device)
    inv_frequencies = 1.0 / (base ** (2 * freq / rope_dims))
    angles = positions[..., None, None] * inv_frequencies  # [b, t, 1, h_rope/2], float32
    sin, cos = torch.sin(angles).to(x.dtype), torch.cos(angles).to(x.dtype)
    x1, x2 = torch.chunk(x_rope, 2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x_pass], dim=-1)


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, doc_start: torch.Tensor, window: int | None
) -> torch.Tensor:
    """bool [b, t, s]: query i sees key j iff doc_start[b, i] <= k_pos[j] <= q_pos[i] and, with a
    window, q_pos[i] - k_pos[j] <= window (q_pos [t], k_pos [s]; -1 marks an empty slot)."""
    kp = k_pos[None, None, :]
    mask = (kp <= q_pos[None, :, None]) & (kp >= doc_start[:, :, None])
    if window is not None:
        mask = mask & (q_pos[None, :, None] - kp <= window)
    return mask


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    doc_start: torch.Tensor,
    window: int | None,
) -> torch.Tensor:
    """Multi-query attention over explicit key positions.

    q: [b, t, n, h]; k, v: [b, s, h] (one shared head); q_pos: int [t] and k_pos: int [s] are
    absolute token indices in the stream (-1 for an empty cache slot); doc_start: int [b, t], the
    index of the first token of each query's document. A query sees key j iff
    doc_start <= k_pos[j] <= q_pos and (global or q_pos - k_pos[j] <= window).
    Returns [b, t, n * h].
    """
    h = q.shape[-1]
    logits = torch.einsum("btnh,bsh->bnts", q, k) * h**-0.5
    mask = attention_mask(q_pos, k_pos, doc_start, window)
    logits = torch.where(mask[:, None], logits.float(), torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, dim=-1).to(v.dtype)
    return torch.einsum("bnts,bsh->btnh", probs, v).flatten(-2)
