"""JAX twin of kernels/conv1d.py (same function, same signature)."""

from __future__ import annotations

import jax.numpy as jnp


def conv1d_ref(x, w, b, segment_pos=None, state=None):
    """Reference causal depthwise conv with document masking.

    Args:
      x: [b, t, e]. w: [W, e] (w[W-1] multiplies the current token). b: [e].
      segment_pos: int [b, t] or None. state: [b, W-1, e] (masked) or None.
    Returns:
      y: [b, t, e] in x.dtype; new_state: [b, W-1, e], masked to the last document.
    """
    bsz, t, e = x.shape
    width = w.shape[0]
    if state is None:
        state = jnp.zeros((bsz, width - 1, e), x.dtype)
    xx = jnp.concatenate([state.astype(x.dtype), x], axis=1)
    if segment_pos is None:
        doc = jnp.zeros((bsz, width - 1 + t), jnp.int32)
    else:
        doc = jnp.cumsum((segment_pos == 0).astype(jnp.int32), axis=1)
        doc = jnp.concatenate([jnp.zeros((bsz, width - 1), jnp.int32), doc], axis=1)
    doc_out = doc[:, width - 1 :]
    y = jnp.broadcast_to(b.astype(x.dtype), (bsz, t, e))
    for shift in range(width):
        start = width - 1 - shift
        keep = (doc[:, start : start + t] == doc_out)[..., None]
        y = y + jnp.where(keep, xx[:, start : start + t], 0.0) * w[width - 1 - shift]
    new_state = jnp.where((doc[:, t:] == doc[:, -1:])[..., None], xx[:, t:], 0.0)
    return y.astype(x.dtype), new_state.astype(x.dtype)
