"""Causal depthwise Conv1D of the recurrent block, with document-boundary masking.

    y_t = b + sum_{s=0}^{W-1} w[W-1-s] * x_{t-s}

where a tap x_{t-s} is dropped when a document starts in (t-s, t] (segment_pos == 0), exactly as
the official code masks it in training mode. `state` holds the W-1 inputs before the chunk, already
masked (entries from before the current document are zero), so prefill, decode and a full forward
compute the same function.
"""

from __future__ import annotations

import torch


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
