"""JAX twin of kernels/rglru.py (same function, same signature)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.rglru import MAX_SQRT_GRADIENT
from kernels.scan_jax import linear_scan_ref


@jax.custom_vjp
def sqrt_bound_derivative(x: jax.Array) -> jax.Array:
    """sqrt(x) whose gradient is clipped at MAX_SQRT_GRADIENT."""
    return jnp.sqrt(x)


def _sqrt_fwd(x):
    return jnp.sqrt(x), x


def _sqrt_bwd(x, g):
    return (g / jnp.sqrt(jnp.maximum(4.0 * x, 1.0 / MAX_SQRT_GRADIENT**2)),)


sqrt_bound_derivative.defvjp(_sqrt_fwd, _sqrt_bwd)


def rg_lru_gates(x, gate_x, gate_a, a_param, segment_pos=None):
    """The RG-LRU's recurrence inputs, float32: a_t and the normalised input, so that
    h_t = a_t h_{t-1} + normalized_x_t (resets: a = 0, multiplier 1). Any leading shape."""
    log_a = (
        -8.0
        * jax.nn.sigmoid(gate_a.astype(jnp.float32))
        * jax.nn.softplus(a_param.astype(jnp.float32))
    )
    a = jnp.exp(log_a)
    multiplier = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a))
    if segment_pos is not None:
        reset = (segment_pos == 0)[..., None]
        a = jnp.where(reset, 0.0, a)
        multiplier = jnp.where(reset, 1.0, multiplier)
    normalized_x = x.astype(jnp.float32) * jax.nn.sigmoid(gate_x.astype(jnp.float32)) * multiplier
    return a, normalized_x


def rg_lru_ref(x, gate_x, gate_a, a_param, segment_pos=None, h0=None):
    """Plain-JAX RG-LRU, gates and scan in float32.

    Args:
      x, gate_x, gate_a: [b, t, d]; the gates are pre-sigmoid.
      a_param: [d]. segment_pos: int [b, t] or None (0 = document start). h0: float32 [b, d] or None.
    Returns:
      y: [b, t, d] in x.dtype; h_last: float32 [b, d].
    """
    if x.ndim != 3 or gate_x.shape != x.shape or gate_a.shape != x.shape:
        raise ValueError(
            f"x, gate_x, gate_a must be [b, t, d]; got {x.shape}, {gate_x.shape}, {gate_a.shape}"
        )
    if a_param.shape != x.shape[-1:]:
        raise ValueError(f"a_param must be [d] = [{x.shape[-1]}], got {a_param.shape}")
    a, normalized_x = rg_lru_gates(x, gate_x, gate_a, a_param, segment_pos)
    y, h_last = linear_scan_ref(a, normalized_x, h0)
    return y.astype(x.dtype), h_last
