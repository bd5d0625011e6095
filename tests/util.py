"""Helpers for the tests: inputs with document resets, official configs, random weights, errors."""

from __future__ import annotations

import numpy as np
import torch

from models.config import ATTENTION, ModelConfig

TOL = 1e-4  # float32 logits, relative Frobenius error


def rel_err(a, b) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def inputs(
    batch: int, t: int, vocab: int, resets: dict[int, list[int]] | None = None, seed: int = 0
):
    """Random tokens and segment positions; resets[row] lists indices where a document starts."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (batch, t))
    pos = np.tile(np.arange(t), (batch, 1))
    for row, starts in (resets or {}).items():
        for s in starts:
            pos[row, s:] = np.arange(t - s)
    return torch.from_numpy(tokens), torch.from_numpy(pos)


def randomize_zeros_(module: torch.nn.Module, std: float = 0.5) -> None:
    """Give zero-initialised parameters (norm scales, biases) random values, so they are tested."""
    with torch.no_grad():
        for p in module.parameters():
            if bool((p == 0).all()):
                p.normal_(0.0, std)


def randomize_zeros_jax(tree, seed: int = 1, std: float = 0.5):
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [
        leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype)
        if bool((leaf == 0).all())
        else leaf
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def has_attention(cfg: ModelConfig) -> bool:
    return ATTENTION in cfg.block_types


# JAX kernels (Pallas) against float64 references: relative Frobenius error, and max |err| /
# max |ref| so that no single element hides in the norm
KERNEL_TOL = {"float32": 1e-5, "bfloat16": 2e-2}
KERNEL_MAX_TOL = {"float32": 1e-5, "bfloat16": 3e-2}


def kernel_errors(out, ref) -> tuple[float, float]:
    """(relative Frobenius error, max-norm relative error); inf if any element is not finite."""
    import jax.numpy as jnp

    o = np.asarray(jnp.asarray(out, jnp.float32), np.float64)
    r = np.asarray(ref, np.float64)
    assert o.shape == r.shape, (o.shape, r.shape)
    assert np.all(np.isfinite(r)), "the reference must be finite"
    if not np.all(np.isfinite(o)):
        return np.inf, np.inf
    denom, mx = np.linalg.norm(r), np.max(np.abs(r), initial=0.0)
    frob = np.linalg.norm(o - r) / denom if denom > 0 else np.linalg.norm(o)
    maxn = np.max(np.abs(o - r), initial=0.0) / mx if mx > 0 else np.max(np.abs(o), initial=0.0)
    return float(frob), float(maxn)


def check_kernel(name, out, ref, dtype: str) -> None:
    """Both errors of `out` against the float64 `ref` within KERNEL_TOL / KERNEL_MAX_TOL[dtype]."""
    frob, maxn = kernel_errors(out, ref)
    assert frob <= KERNEL_TOL[dtype] and maxn <= KERNEL_MAX_TOL[dtype], (
        f"{name}: rel err {frob:.3g} (tol {KERNEL_TOL[dtype]}), max-norm err {maxn:.3g} "
        f"(tol {KERNEL_MAX_TOL[dtype]})"
    )
