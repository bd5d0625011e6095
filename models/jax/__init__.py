"""The JAX models: `Model(cfg, impl="reference")` with params as a plain pytree, and converters."""

from models.jax.convert import from_recurrentgemma, from_torch, to_recurrentgemma
from models.jax.model import IMPLS, Cache, Model, init

__all__ = [
    "IMPLS",
    "Cache",
    "Model",
    "from_recurrentgemma",
    "from_torch",
    "init",
    "to_recurrentgemma",
]
