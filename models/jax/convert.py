"""Weight converters into our JAX params: official recurrentgemma (flax) and our torch Model.

jm, params = from_recurrentgemma(rg_module, rg_params)   recurrentgemma.jax.Griffin + its params
jm, params = from_torch(model)                           our torch Model
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from models.config import config_from_recurrentgemma
from models.jax.model import Model
from models.params import unflatten


def _from_flax(node):
    """Flax Dense {"kernel": [in, out]} -> {"weight": [out, in]}; other leaves unchanged."""
    if not isinstance(node, dict):
        return node
    if "kernel" in node:
        out = {"weight": jnp.asarray(node["kernel"]).T}
        if "bias" in node:
            out["bias"] = jnp.asarray(node["bias"])
        return out
    return {k: _from_flax(v) for k, v in node.items()}


def from_recurrentgemma(rg_module, rg_params) -> tuple[Model, dict]:
    """An official `recurrentgemma.jax.Griffin` and its params (or {"params": ...} variables)."""
    cfg = config_from_recurrentgemma(rg_module.config)
    tree = rg_params.get("params", rg_params)
    params = {
        "embedder": {"input_embedding": jnp.asarray(tree["embedder"]["input_embedding"])},
        "blocks": [_from_flax(dict(tree[f"blocks.{i}"])) for i in range(cfg.depth)],
        "final_norm": {"scale": jnp.asarray(tree["final_norm"]["scale"])},
    }
    for block in params["blocks"]:
        up = block["mlp_block"]["ffw_up"]
        up["b"] = up["b"].reshape(2, -1)  # official shape [2, 1, 1, m]
    return Model(cfg), params


def from_torch(model) -> tuple[Model, dict]:
    """Our torch Model as (JAX Model, params); same names, same layouts, same dtypes."""
    flat = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            flat[key] = jnp.asarray(t.float().numpy()).astype(jnp.bfloat16)
        else:
            flat[key] = jnp.asarray(np.asarray(t))
    return Model(model.config), unflatten(flat)
