"""Weight converters into our torch Model: official recurrentgemma, transformers Gemma, our JAX params.

from_recurrentgemma(rg_model)   recurrentgemma.torch.Griffin -> Model (same outputs)
from_gemma(hf_model)            transformers GemmaForCausalLM, one KV head -> MQA Model
from_jax(cfg, params)           our JAX params pytree -> Model
"""

from __future__ import annotations

import numpy as np
import torch

from models.config import (
    ModelConfig,
    config_from_gemma,
    config_from_recurrentgemma,
    gemma_config,
    recurrentgemma_config,
)
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


def to_recurrentgemma(model: Model, gradient_checkpointing: bool = True):
    """Our Model as an official `recurrentgemma.torch.Griffin` (same device and dtype)."""
    from recurrentgemma import torch as rgt

    first = model.embedder.input_embedding
    rg = rgt.Griffin(
        recurrentgemma_config(model.config),
        gradient_checkpointing=gradient_checkpointing,
        device="meta",
    )
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key in [k for k in sd if k.endswith("mlp_block.ffw_up.b")]:
        sd[key] = sd[key].reshape(2, 1, 1, -1)
    rg.load_state_dict(sd, strict=True, assign=True)
    return rg.to(device=first.device, dtype=first.dtype)


def to_gemma(model: Model, attn_implementation: str = "sdpa"):
    """Our Gemma-flavoured MQA Model as a transformers `GemmaForCausalLM` (same device and dtype)."""
    from transformers import GemmaForCausalLM

    first = model.embedder.input_embedding
    hf_config = gemma_config(model.config)
    hf_config._attn_implementation = attn_implementation
    with torch.device(first.device):  # initialise in place: fast on a GPU, no meta buffers
        hf = GemmaForCausalLM(hf_config).to(first.dtype)
    src = hf.model
    with torch.no_grad():
        src.embed_tokens.weight.copy_(first)
        src.norm.weight.copy_(model.final_norm.scale)
        for layer, block in zip(src.layers, model.blocks, strict=True):
            attn, mlp = block.attention_block, block.mlp_block
            layer.input_layernorm.weight.copy_(block.temporal_pre_norm.scale)
            layer.post_attention_layernorm.weight.copy_(block.channel_pre_norm.scale)
            layer.self_attn.q_proj.weight.copy_(attn.proj_q.weight)
            layer.self_attn.k_proj.weight.copy_(attn.proj_k.weight)
            layer.self_attn.v_proj.weight.copy_(attn.proj_v.weight)
            layer.self_attn.o_proj.weight.copy_(attn.proj_final.weight)
            layer.mlp.gate_proj.weight.copy_(mlp.ffw_up.w[0].T)
            layer.mlp.up_proj.weight.copy_(mlp.ffw_up.w[1].T)
            layer.mlp.down_proj.weight.copy_(mlp.ffw_down.weight)
    hf.tie_weights()
    return hf.eval()


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
