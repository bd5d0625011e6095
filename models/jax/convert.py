"""Weight converters into our JAX params: official recurrentgemma (flax) and our torch Model.

jm, params = from_recurrentgemma(rg_module, rg_params)   recurrentgemma.jax.Griffin + its params
jm, params = from_torch(model)                           our torch Model
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from models.config import ModelConfig, config_from_recurrentgemma, recurrentgemma_config
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


def to_recurrentgemma(cfg: ModelConfig, params: dict, dtype=None):
    """Our params as an official `recurrentgemma.jax.Griffin` and its {"params": ...} variables."""
    from recurrentgemma import jax as rgj

    def to_flax(node):
        if not isinstance(node, dict):
            return node
        if "weight" in node:  # our [out, in] linear -> flax Dense kernel [in, out]
            out = {"kernel": node["weight"].T}
            if "bias" in node:
                out["bias"] = node["bias"]
            return out
        return {k: to_flax(v) for k, v in node.items()}

    tree = {
        "embedder": {"input_embedding": params["embedder"]["input_embedding"]},
        "final_norm": {"scale": params["final_norm"]["scale"]},
    }
    for i, block in enumerate(params["blocks"]):
        flax_block = to_flax(block)
        up = flax_block["mlp_block"]["ffw_up"]
        flax_block["mlp_block"]["ffw_up"] = {"w": up["w"], "b": up["b"].reshape(2, 1, 1, -1)}
        tree[f"blocks.{i}"] = flax_block
    dtype = dtype or params["embedder"]["input_embedding"].dtype
    module = rgj.Griffin(recurrentgemma_config(cfg), dtype=dtype, param_dtype=dtype)
    return module, {"params": tree}


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
