"""Cross-entropy of (soft-capped) logits and its gradient with respect to the logits, in place.

    loss_rows = xent_grad_(logits, targets, cap, scale)       # logits now hold the gradient
    loss_rows, grad = xent_grad_ref(logits, targets, cap, scale)

For logits l [n, V] (any float dtype), the capped z = cap * tanh(l / cap) (z = l when cap is 0):
loss_rows[i] = logsumexp(z[i]) - z[i, targets[i]] (float32) and the gradient of
scale * sum_i loss_rows[i] with respect to l: scale * (softmax(z) - onehot(targets)) * dz/dl, with
dz/dl = 1 - tanh(l / cap)^2, in the logits' dtype.

The training loss (models.torch.optimized.chunked_loss) runs this on each chunk of [tokens, vocab]
logits. In torch ops that was about a dozen float32 passes over the chunk (the upcast, the cap's
div, tanh and multiply, logsumexp's passes, the subtract and exp, 1 - t^2 in three ops, the
product, the division, the downcast): by count about 54 GB of traffic for a 2048 x 256k chunk.
In the H100 profile of RecurrentGemma-2B's 699 ms training step at B=8 the loss took 258 ms,
its matmuls included, logsumexp alone 72 ms (docs/h100.md, training).
The kernel reads the logits twice (one program per row: an
online logsumexp, then the gradient) and writes the gradient once over them: 3 bytes moved per
logit byte instead of ~27. Measured on the H100 (docs/h100.md): 1.68 ms a
chunk, and RG-2B's B=8 step went from 53.3% MFU to 563.5 ms, 69.1%.
"""

from __future__ import annotations

import torch

from kernels._triton import tl, triton
from kernels.fused import _tanh


def _check(logits, targets):
    if logits.ndim != 2:
        raise ValueError(f"logits must be [n, vocab]; got shape {list(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be [n] = [{logits.shape[0]}]; got {list(targets.shape)}")
    if logits.dtype not in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"logits must be a float dtype (64, 32 or 16 bits), got {logits.dtype}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"targets must be int32 or int64, got {targets.dtype}")


def xent_grad_ref(logits, targets, cap: float = 0.0, scale: float = 1.0):
    """(loss_rows [n], grad [n, V] in logits.dtype) in plain torch, in float32 (float64 logits:
    in float64, the tests' oracle)."""
    _check(logits, targets)
    lf = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if cap:
        t = torch.tanh(lf / cap)
        z = t * cap
    else:
        z = lf
    lse = torch.logsumexp(z, dim=-1)
    loss = lse - z.gather(1, targets[:, None].long())[:, 0]
    g = torch.exp(z - lse[:, None])
    g[torch.arange(g.shape[0], device=g.device), targets.long()] -= 1.0
    if cap:
        g = g * (1.0 - t * t)
    return loss, (g * scale).to(logits.dtype)


@triton.jit
def _xent_kernel(l_ptr, t_ptr, loss_ptr, V, stride, cap, scale,
                 CAP: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    base = l_ptr + row * stride
    tgt = tl.load(t_ptr + row).to(tl.int64)
    # pass 1: logsumexp over the row, one block at a time (a running max and sum of exps)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    for v0 in range(0, V, BLOCK):
        cols = v0 + tl.arange(0, BLOCK)
        valid = cols < V
        z = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32)
        if CAP:
            z = _tanh(z / cap) * cap
        z = tl.where(valid, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    zt = tl.load(base + tgt).to(tl.float32)
    if CAP:
        zt = _tanh(zt / cap) * cap
    tl.store(loss_ptr + row, lse - zt)
    # pass 2: the gradient, written over the logits
    for v0 in range(0, V, BLOCK):
        cols = v0 + tl.arange(0, BLOCK)
        valid = cols < V
        raw = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32)
        if CAP:
            t = _tanh(raw / cap)
            g = tl.exp(t * cap - lse)
            g = tl.where(cols == tgt, g - 1.0, g) * (1.0 - t * t)
        else:
            g = tl.exp(raw - lse)
            g = tl.where(cols == tgt, g - 1.0, g)
        tl.store(base + cols, (g * scale).to(l_ptr.dtype.element_ty), mask=valid)


def xent_grad_(logits, targets, cap: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """xent_grad_ref's loss rows (float32 [n]), with its gradient written into `logits`.

    logits: [n, V], rows contiguous (the last stride 1); targets: [n] in [0, V) (not checked:
    that would sync the device on every call of a training step)."""
    _check(logits, targets)
    if logits.stride(1) != 1:
        raise ValueError("logits must be contiguous in the vocabulary dimension")
    n, v = logits.shape
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    if n == 0:
        return loss
    _xent_kernel[(n,)](
        logits, targets.contiguous(), loss, v, logits.stride(0), float(cap or 1.0), float(scale),
        CAP=bool(cap), BLOCK=min(4096, triton.next_power_of_2(v)), num_warps=8,
    )  # fmt: skip
    return loss
