"""Analytic work of the model workloads: FLOPs, bytes moved, and the size of the decode state
(Griffin paper, App. F.4). Declared apart from timing, so throughput, MFU and MBU are derived in
one place (bench/workloads.py:derive)."""

from __future__ import annotations

import numpy as np

from models.config import ATTENTION, RECURRENT, ModelConfig, param_count

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def dtype_bytes(dtype: str) -> int:
    return DTYPE_BYTES[dtype]


def weight_bytes(cfg: ModelConfig, dtype: str) -> int:
    return param_count(cfg) * dtype_bytes(dtype)


def cache_bytes(cfg: ModelConfig, batch: int, length: int, dtype: str) -> int:
    """Decode state after `length` tokens: per recurrent block the float32 RG-LRU state and the
    last conv_width - 1 inputs; per attention block keys and values (one head) of the last
    `window` tokens (local) or of all tokens (global)."""
    b = dtype_bytes(dtype)
    total = 0
    for kind in cfg.block_types:
        if kind == RECURRENT:
            total += cfg.lru_width * 4 + (cfg.conv_width - 1) * cfg.lru_width * b
        else:
            kept = length if cfg.attention_window is None else min(length, cfg.attention_window)
            total += 2 * kept * cfg.head_dim * b
    return batch * total


def _linear_flops_per_token(cfg: ModelConfig) -> float:
    """Matmul (and conv) FLOPs of one token through the blocks, attention scores excluded."""
    d, e, m, n, h = cfg.width, cfg.lru_width, cfg.mlp_width, cfg.num_heads, cfg.head_dim
    mlp = 2 * 3 * d * m
    recurrent = 2 * (2 * d * e + e * d + 2 * e * e / cfg.lru_heads) + 2 * cfg.conv_width * e
    attention = 2 * (d * n * h + 2 * d * h + n * h * d)
    return sum(mlp + (recurrent if k == RECURRENT else attention) for k in cfg.block_types)


def keys_seen(cfg: ModelConfig, q_index: np.ndarray) -> np.ndarray:
    """How many keys a query at stream index q attends to (itself included)."""
    if cfg.attention_window is None:
        return q_index + 1
    return np.minimum(q_index, cfg.attention_window) + 1


def forward_flops(cfg: ModelConfig, batch: int, start: int, t: int, logit_positions: int) -> float:
    """FLOPs of `t` new tokens after `start` tokens, with logits at `logit_positions` positions."""
    q = np.arange(start, start + t, dtype=np.float64)
    n_attention = sum(k == ATTENTION for k in cfg.block_types)
    scores = 4 * cfg.num_heads * cfg.head_dim * float(keys_seen(cfg, q).sum()) * n_attention
    logits = 2 * cfg.width * cfg.vocab_size * logit_positions
    return batch * (t * _linear_flops_per_token(cfg) + scores + logits)


def train_flops(cfg: ModelConfig, batch: int, t: int) -> float:
    """Forward + backward (2x forward) with logits at every position."""
    return 3 * forward_flops(cfg, batch, 0, t, t)


def train_state_bytes(cfg: ModelConfig, dtype: str) -> int:
    """Memory a training step holds before any activation: weights, gradients and AdamW's two
    moments, all in the parameter dtype (as every implementation here trains)."""
    return 4 * weight_bytes(cfg, dtype)


def train_weight_bytes(cfg: ModelConfig, dtype: str) -> int:
    """Weight-related bytes of one AdamW training step, a floor that leaves activations out:
    weights read in the forward and the backward pass, gradients written and read, and AdamW's
    read-modify-write of weights and both moments (all in the parameter dtype): 10 passes."""
    return 10 * weight_bytes(cfg, dtype)
