"""JAX twin of kernels/scan.py: `h_t = a_t * h_{t-1} + x_t` over [b, t, d], float32 state."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def linear_scan_ref(a: jax.Array, x: jax.Array, h0: jax.Array | None = None):
    """Reference scan (lax.scan over time in float32).

    Args:
      a, x: [b, t, d]. h0: float32 [b, d] or None.
    Returns:
      h: [b, t, d] in x.dtype; h_last: float32 [b, d].
    """
    if x.ndim != 3 or a.shape != x.shape:
        raise ValueError(f"a and x must both be [b, t, d]; got a {a.shape}, x {x.shape}")
    if h0 is None:
        h0 = jnp.zeros((x.shape[0], x.shape[2]), jnp.float32)

    def step(h, ax):
        a_t, x_t = ax
        h = a_t.astype(jnp.float32) * h + x_t.astype(jnp.float32)
        return h, h.astype(x.dtype)

    h_last, ys = jax.lax.scan(step, h0, (jnp.swapaxes(a, 0, 1), jnp.swapaxes(x, 0, 1)))
    return jnp.swapaxes(ys, 0, 1), h_last
