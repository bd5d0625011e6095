"""Weight converters into our torch Model: official recurrentgemma, transformers Gemma, our JAX params.

from_recurrentgemma(rg_model)   recurrentgemma.torch.Griffin -> Model (same outputs)
from_gemma(hf_model)            transformers GemmaForCausalLM, one KV head -> MQA Model
from_jax(cfg, params)           our JAX params pytree -> Model
"""

from __future__ import annotations

import numpy as np
import torch

from models.config import ModelConfig, config_from_gemma, config_from_recurrentgemma
from models.params import flatten
from models.torch.model import Model


def from_recurrentgemma(rg_model) -> Model:
    """An official `recurrentgemma.torch.Griffin` as our Model, weights copied (same dtype/device)."""
    cfg = config_from_recurrentgemma(rg_model.config)
    sd = dict(rg_model.state_dict())
    for key in [k for k in sd if k.endswith("mlp_block.ffw_up.b")]:
        sd[key] = sd[key].reshape(2, -1)  # official shape [2, 1, 1, m]
    first = next(iter(sd.values()))
    model = Model(cfg, device="meta")
    model.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device=first.device, dtype=first.dtype)


def from_gemma(hf_model) -> Model:
    """A transformers `GemmaForCausalLM` with one KV head as our (global) MQA Model."""
    cfg = config_from_gemma(hf_model.config)
    src = hf_model.model
    sd = {
        "embedder.input_embedding": src.embed_tokens.weight,
        "final_norm.scale": src.norm.weight,
    }
    for i, layer in enumerate(src.layers):
        p, attn, mlp = f"blocks.{i}.", layer.self_attn, layer.mlp
        sd[p + "temporal_pre_norm.scale"] = layer.input_layernorm.weight
        sd[p + "channel_pre_norm.scale"] = layer.post_attention_layernorm.weight
        sd[p + "attention_block.proj_q.weight"] = attn.q_proj.weight
        sd[p + "attention_block.proj_k.weight"] = attn.k_proj.weight
        sd[p + "attention_block.proj_v.weight"] = attn.v_proj.weight
        sd[p + "attention_block.proj_final.weight"] = attn.o_proj.weight
        sd[p + "mlp_block.ffw_up.w"] = torch.stack([mlp.gate_proj.weight.T, mlp.up_proj.weight.T])
        sd[p + "mlp_block.ffw_down.weight"] = mlp.down_proj.weight
    first = src.embed_tokens.weight
    model = Model(cfg, device="meta")
    model.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device=first.device, dtype=first.dtype)


def from_jax(cfg: ModelConfig, params) -> Model:
    """Our JAX params pytree (see models.params) as a torch Model on the CPU."""
    sd = {k: _to_torch(v) for k, v in flatten(params).items()}
    model = Model(cfg, device="meta")
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def _to_torch(array) -> torch.Tensor:
    """A JAX / numpy array as a torch tensor (bfloat16 goes through float32: numpy lacks it)."""
    host = np.asarray(array)
    if host.dtype.name == "bfloat16":
        return torch.from_numpy(host.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(host.copy())
