"""Residual blocks and their decode caches (PyTorch). Mirrors models/jax/blocks.py.

Caches, per block:
- recurrent: the RG-LRU state (float32 [b, e]) and the Conv1D state (the last W-1 inputs, [b, W-1, e],
  entries from before the current document zeroed);
- attention: keys and values [b, s, h] with the absolute stream index of every slot ([s], -1 when
  empty) and, per row, the index where the current document started ([b]). Local attention keeps a
  ring buffer of s = window slots (token i lives in slot i % window); global attention keeps every
  token and grows its buffer (doubling) when it is full.

Document resets (segment_pos == 0) cut the RG-LRU state, the Conv1D window and the attention
context, in a full forward as in prefill + decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernels.conv1d import conv1d_ref
from kernels.rglru import rg_lru_ref
from models.config import RECURRENT, ModelConfig
from models.torch import layers, optimized


@dataclass
class RecurrentCache:
    rg_lru: torch.Tensor  # float32 [b, e]
    conv: torch.Tensor  # [b, W-1, e]


@dataclass
class AttentionCache:
    k: torch.Tensor  # [b, s, h]
    v: torch.Tensor  # [b, s, h]
    pos: torch.Tensor  # int64 [s], absolute index of the token in each slot, -1 if empty
    doc_start: torch.Tensor  # int64 [b], index of the current document's first token


BlockCache = RecurrentCache | AttentionCache


def doc_starts(segment_pos, q_pos, cache: AttentionCache | None) -> torch.Tensor:
    """int [b, t]: the stream index where each query's document starts — its latest reset
    (segment_pos == 0) at or before it, else the cache's current document start (else 0)."""
    if cache is None:
        prev = torch.zeros(segment_pos.shape[0], dtype=torch.long, device=segment_pos.device)
    else:
        prev = cache.doc_start
    reset_at = torch.where(segment_pos == 0, q_pos, -1)
    return torch.maximum(prev[:, None], torch.cummax(reset_at, dim=1).values)


def global_capacity(n_tokens: int) -> int:
    """Slots of a global-attention cache holding n_tokens: the next power of two above, >= 16."""
    return max(16, 1 << n_tokens.bit_length())


class RecurrentBlock(nn.Module):
    """linear_out( RG-LRU(Conv1D(linear_x(x))) * gelu(linear_y(x)) )."""

    def __init__(self, cfg: ModelConfig, device=None, dtype=None, impl: str = "reference"):
        super().__init__()
        self.impl = impl
        d, e = cfg.width, cfg.lru_width
        self.linear_y = nn.Linear(d, e, device=device, dtype=dtype)
        self.linear_x = nn.Linear(d, e, device=device, dtype=dtype)
        self.linear_out = nn.Linear(e, d, device=device, dtype=dtype)
        self.conv_1d = layers.Conv1D(e, cfg.conv_width, device=device, dtype=dtype)
        self.rg_lru = layers.RGLRUParams(e, cfg.lru_heads, device=device, dtype=dtype)
        for lin in (self.linear_x, self.linear_y):
            nn.init.normal_(lin.weight, std=math.sqrt(1.0 / d))
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.linear_out.weight, std=math.sqrt(2.0 / cfg.depth / e))
        nn.init.zeros_(self.linear_out.bias)

    def forward(
        self,
        x: torch.Tensor,
        segment_pos: torch.Tensor,
        cache: RecurrentCache | None,
        length: int,
        return_cache: bool,
    ) -> tuple[torch.Tensor, RecurrentCache | None]:
        """x: [b, t, d] -> [b, t, d]."""
        del length  # the recurrence needs no stream position
        if self.impl == "optimized":
            return optimized.recurrent_forward(self, x, segment_pos, cache, return_cache)
        y = layers.gelu(self.linear_y(x))
        xb = self.linear_x(x)
        conv, lru = self.conv_1d, self.rg_lru
        xb, conv_state = conv1d_ref(
            xb, conv.w, conv.b, segment_pos, None if cache is None else cache.conv
        )
        xb, h_last = rg_lru_ref(
            xb,
            lru.input_gate(xb),
            lru.a_gate(xb),
            lru.a_param,
            segment_pos,
            None if cache is None else cache.rg_lru,
        )
        out = self.linear_out(xb * y)
        return out, RecurrentCache(h_last, conv_state) if return_cache else None


class AttentionBlock(nn.Module):
    """Multi-query attention (n query heads, one key/value head), RoPE, local or global."""

    def __init__(self, cfg: ModelConfig, device=None, dtype=None, impl: str = "reference"):
        super().__init__()
        d, n, h = cfg.width, cfg.num_heads, cfg.head_dim
        self.cfg = cfg
        self.impl = impl
        self.proj_q = nn.Linear(d, n * h, bias=False, device=device, dtype=dtype)
        self.proj_k = nn.Linear(d, h, bias=False, device=device, dtype=dtype)
        self.proj_v = nn.Linear(d, h, bias=False, device=device, dtype=dtype)
        self.proj_final = nn.Linear(n * h, d, bias=cfg.bias, device=device, dtype=dtype)
        for lin in (self.proj_q, self.proj_k, self.proj_v):
            nn.init.normal_(lin.weight, std=math.sqrt(1.0 / d))
        nn.init.normal_(self.proj_final.weight, std=math.sqrt(2.0 / cfg.depth / (n * h)))
        if cfg.bias:
            nn.init.zeros_(self.proj_final.bias)

    def forward(
        self,
        x: torch.Tensor,
        segment_pos: torch.Tensor,
        cache: AttentionCache | None,
        length: int,
        return_cache: bool,
    ) -> tuple[torch.Tensor, AttentionCache | None]:
        """x: [b, t, d] -> [b, t, d]; `length` tokens precede x in the stream (0 without cache)."""
        if self.impl == "optimized":
            return optimized.attention_forward(self, x, segment_pos, cache, length, return_cache)
        cfg = self.cfg
        b, t, _ = x.shape
        q, k, v = self.project(x, segment_pos)
        q_pos = torch.arange(length, length + t, device=x.device)
        doc_start = doc_starts(segment_pos, q_pos, cache)

        if cache is None:
            keys, values, k_pos = k, v, q_pos
        else:
            keys = torch.cat([cache.k, k], dim=1)
            values = torch.cat([cache.v, v], dim=1)
            k_pos = torch.cat([cache.pos, q_pos])
        out = layers.attend(q, keys, values, q_pos, k_pos, doc_start, cfg.attention_window)
        out = self.proj_final(out)
        if not return_cache:
            return out, None
        if cache is None:
            cache = self.empty_cache(b, t, x.dtype, x.device)
        return out, self._write(cache, k, v, length, doc_start[:, -1])

    def project(self, x: torch.Tensor, segment_pos: torch.Tensor):
        """q [b, t, n, h] and the one key/value head k, v [b, t, h], RoPE at segment_pos."""
        return self.rope(self.proj_q(x), self.proj_k(x), self.proj_v(x), segment_pos)

    def rope(self, q, k, v, segment_pos: torch.Tensor):
        """The projections q [b, t, n * h], k, v [b, t, h] as `project` returns them: q split
        into heads, RoPE on q and k at segment_pos."""
        cfg = self.cfg
        q = layers.apply_rope(
            q.unflatten(-1, (cfg.num_heads, cfg.head_dim)),
            segment_pos,
            cfg.rope_dims,
            cfg.rope_base,
        )
        k = layers.apply_rope(k[:, :, None], segment_pos, cfg.rope_dims, cfg.rope_base)[:, :, 0]
        return q, k, v

    def empty_cache(self, batch: int, n_tokens: int, dtype, device) -> AttentionCache:
        """An empty cache sized for n_tokens (ring buffer of `window` slots when local)."""
        window = self.cfg.attention_window
        slots = window if window is not None else global_capacity(n_tokens)
        return attention_cache(self.cfg, batch, slots, dtype, device)

    def _write(self, cache: AttentionCache, k, v, length: int, doc_start) -> AttentionCache:
        """A new cache holding the new keys/values k, v: [b, t, h] of stream indices
        length .. length + t - 1 (the old cache unchanged)."""
        cache = grow_global(self.cfg, cache, length + k.shape[1])
        new = AttentionCache(cache.k.clone(), cache.v.clone(), cache.pos.clone(), doc_start)
        write_kv_(new, k, v, length, self.cfg.attention_window)
        return new


def attention_cache(cfg: ModelConfig, batch: int, slots: int, dtype, device) -> AttentionCache:
    """An empty attention cache of `slots` key/value slots (pos -1: empty)."""
    zeros = torch.zeros(batch, slots, cfg.head_dim, dtype=dtype, device=device)
    return AttentionCache(
        k=zeros,
        v=zeros.clone(),
        pos=torch.full((slots,), -1, dtype=torch.long, device=device),
        doc_start=torch.zeros(batch, dtype=torch.long, device=device),
    )


def grow_global(cfg: ModelConfig, cache: AttentionCache, n_tokens: int) -> AttentionCache:
    """A global-attention cache with room for n_tokens (doubling; new slots empty); a local
    cache, or one with room already, is returned as is."""
    if cfg.attention_window is not None or n_tokens <= cache.k.shape[1]:
        return cache
    pad = global_capacity(n_tokens) - cache.k.shape[1]
    return AttentionCache(
        k=F.pad(cache.k, (0, 0, 0, pad)),
        v=F.pad(cache.v, (0, 0, 0, pad)),
        pos=F.pad(cache.pos, (0, pad), value=-1),
        doc_start=cache.doc_start,
    )


def write_kv_(cache: AttentionCache, k, v, length: int, ring: int | None) -> None:
    """Store keys/values k, v [b, t, h] of stream indices length .. length + t - 1 in place: in
    slot = index (ring None: a global cache with room) or index % ring (a ring buffer of `ring`
    slots keeps only the last `ring` tokens; the reference uses window slots, the optimized path
    window + 1, the window and the query's own)."""
    t = k.shape[1]
    if ring is None:
        pos = torch.arange(length, length + t, device=k.device)
        slots = pos
    else:
        keep = min(ring, t)
        k, v = k[:, t - keep :], v[:, t - keep :]
        pos = torch.arange(length + t - keep, length + t, device=k.device)
        slots = pos % ring
    cache.k[:, slots] = k.to(cache.k.dtype)
    cache.v[:, slots] = v.to(cache.v.dtype)
    cache.pos[slots] = pos


class ResidualBlock(nn.Module):
    """x + mix(RMSNorm(x)), then + MLP(RMSNorm(.)); `mix` is recurrent or attention."""

    def __init__(
        self, cfg: ModelConfig, kind: str, device=None, dtype=None, impl: str = "reference"
    ):
        super().__init__()
        self.kind = kind
        self.impl = impl
        self.temporal_pre_norm = layers.RMSNorm(cfg.width, cfg.norm_eps, device=device, dtype=dtype)
        if kind == RECURRENT:
            self.recurrent_block = RecurrentBlock(cfg, device=device, dtype=dtype, impl=impl)
        else:
            self.attention_block = AttentionBlock(cfg, device=device, dtype=dtype, impl=impl)
        self.channel_pre_norm = layers.RMSNorm(cfg.width, cfg.norm_eps, device=device, dtype=dtype)
        self.mlp_block = layers.MLPBlock(
            cfg.width, cfg.mlp_width, cfg.bias, 2.0 / cfg.depth, device=device, dtype=dtype
        )

    @property
    def temporal_block(self) -> RecurrentBlock | AttentionBlock:
        return self.recurrent_block if self.kind == RECURRENT else self.attention_block

    def forward(self, x, segment_pos, cache, length: int, return_cache: bool):
        """x: [b, t, d] -> ([b, t, d], new cache or None)."""
        if self.impl == "optimized":
            mixed, new_cache = self.temporal_block(
                optimized.norm(self.temporal_pre_norm, x), segment_pos, cache, length, return_cache
            )
            residual = mixed + x
            normed = optimized.norm(self.channel_pre_norm, residual)
            return optimized.mlp_forward(self.mlp_block, normed) + residual, new_cache
        mixed, new_cache = self.temporal_block(
            self.temporal_pre_norm(x), segment_pos, cache, length, return_cache
        )
        residual = mixed + x
        return self.mlp_block(self.channel_pre_norm(residual)) + residual, new_cache
