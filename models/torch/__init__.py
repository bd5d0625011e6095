"""The PyTorch models: `Model(cfg, impl="reference")` and converters from the official code."""

from models.torch.convert import (
    from_gemma,
    from_jax,
    from_recurrentgemma,
    to_gemma,
    to_recurrentgemma,
)
from models.torch.model import IMPLS, Cache, Model

__all__ = [
    "IMPLS",
    "Cache",
    "Model",
    "from_gemma",
    "from_jax",
    "from_recurrentgemma",
    "to_gemma",
    "to_recurrentgemma",
]
