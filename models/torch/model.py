"""The model: embedding, residual blocks, final norm, tied output layer (PyTorch).

Mirrors models/jax/model.py. Public API (DESIGN.md):

    m = Model(cfg, impl="reference")
    logits = m(tokens, segment_pos)                       # int [b, t] each -> [b, t, v]
    logits, cache = m.prefill(tokens, segment_pos)
    logits, cache = m.decode(tokens[:, -1:], segment_pos[:, -1:], cache)

segment_pos is each token's position within its document; 0 starts a new document, which resets
the RG-LRU state, the Conv1D window and the attention context (also inside decode).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelConfig, embed_multiplier
from models.torch.blocks import AttentionCache, BlockCache, RecurrentCache, ResidualBlock
from models.torch.layers import RMSNorm

IMPLS = ("reference", "optimized")


@dataclass
class Cache:
    """Decode state of every block, and how many tokens the stream holds so far."""

    blocks: list[BlockCache]
    length: int

    @property
    def batch_size(self) -> int:
        first = self.blocks[0]
        return (first.rg_lru if isinstance(first, RecurrentCache) else first.k).shape[0]

    def nbytes(self) -> int:
        """Bytes held by the cache tensors."""
        total = 0
        for c in self.blocks:
            tensors = (c.rg_lru, c.conv) if isinstance(c, RecurrentCache) else (c.k, c.v, c.pos)
            total += sum(x.numel() * x.element_size() for x in tensors)
        return total


def check_inputs(tokens, segment_pos) -> None:
    """Raise a clear error for tokens / segment_pos that the model cannot take."""
    for name, x in (("tokens", tokens), ("segment_pos", segment_pos)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of int64 [b, t], got {type(x).__name__}"
            )
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (int64 [b, t]), got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must have rank 2 [batch, time], got shape {list(x.shape)}")
    if tokens.shape != segment_pos.shape:
        raise ValueError(
            f"tokens {list(tokens.shape)} and segment_pos {list(segment_pos.shape)} must have the same shape"
        )
    if tokens.shape[1] == 0:
        raise ValueError("tokens must hold at least one time step")


def _check_logits_option(logits: str) -> None:
    if logits not in ("all", "last"):
        raise ValueError(f"logits must be 'all' or 'last', got {logits!r}")


class Model(nn.Module):
    """Hawk, Griffin or the MQA Transformer, as `cfg.block_types` says."""

    def __init__(self, cfg: ModelConfig, impl: str = "reference", device=None, dtype=None):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid impls: {', '.join(IMPLS)}")
        self.config = cfg
        self.impl = impl
        self.embedder = nn.Module()
        self.embedder.input_embedding = nn.Parameter(
            torch.empty(cfg.vocab_size, cfg.width, device=device, dtype=dtype)
        )
        nn.init.normal_(self.embedder.input_embedding, std=math.sqrt(1.0 / cfg.width))
        self.blocks = nn.ModuleList(
            ResidualBlock(cfg, kind, device=device, dtype=dtype, impl=impl)
            for kind in cfg.block_types
        )
        self.final_norm = RMSNorm(cfg.width, cfg.norm_eps, device=device, dtype=dtype)

    def use_impl(self, impl: str) -> Model:
        """Switch every block to another implementation in place (the weights are shared: both
        implementations have the same parameters). Returns self."""
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid impls: {', '.join(IMPLS)}")
        self.impl = impl
        for module in self.modules():
            if module is not self and hasattr(module, "impl"):
                module.impl = impl
        return self

    # -- pieces ---------------------------------------------------------------------------------

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:  # int [b, t] -> [b, t, d]
        table = self.embedder.input_embedding
        x = table[tokens]
        scale = embed_multiplier(self.config, str(table.dtype))
        return x if scale is None else x * scale

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # [b, t, d] -> [b, t, v]
        if self.impl == "optimized":
            from models.torch.optimized import norm

            normed = norm(self.final_norm, x)
        else:
            normed = self.final_norm(x)
        logits = normed @ self.embedder.input_embedding.T
        cap = self.config.logits_soft_cap
        return torch.tanh(logits / cap) * cap if cap else logits

    def _blocks(
        self, tokens, segment_pos, cache: Cache | None, return_cache: bool, checkpoint=False
    ):
        """The residual stream after the last block, [b, t, d], and the new cache. checkpoint:
        see `features`."""
        check_inputs(tokens, segment_pos)
        hint = contextlib.nullcontext()
        if self.impl == "optimized" and cache is None and tokens.shape[1] > 1:
            from models.torch import optimized  # attention asks once per forward, here

            hint = optimized.one_document_hint(segment_pos)
        x = self.embed(tokens)
        length = 0 if cache is None else cache.length
        new_blocks = []
        with hint:
            if checkpoint and cache is None and not return_cache and torch.is_grad_enabled():
                return self._checkpointed(x, segment_pos), None
            for i, block in enumerate(self.blocks):
                x, c = block(
                    x, segment_pos, None if cache is None else cache.blocks[i], length, return_cache
                )
                new_blocks.append(c)
        new_cache = Cache(new_blocks, length + tokens.shape[1]) if return_cache else None
        return x, new_cache

    def _checkpointed(self, x, segment_pos):
        """The blocks of a fresh stream, each recomputed in the backward pass (non-reentrant
        torch.utils.checkpoint: only each block's input is kept). The recomputation runs under
        the same attention hint as the forward (the same kernels, the same saved tensors)."""
        from torch.utils.checkpoint import checkpoint

        again = contextlib.nullcontext
        if self.impl == "optimized":
            from models.torch import optimized

            again = optimized.hint_as_now()

        def run(block, x):
            return block(x, segment_pos, None, 0, False)[0]

        for block in self.blocks:
            x = checkpoint(
                run,
                block,
                x,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), again()),
            )
        return x

    def _run(self, tokens, segment_pos, cache: Cache | None, return_cache: bool, logits="all"):
        x, new_cache = self._blocks(tokens, segment_pos, cache, return_cache)
        return self.logits(x if logits == "all" else x[:, -1:]), new_cache

    def features(
        self, tokens: torch.Tensor, segment_pos: torch.Tensor, *, checkpoint: bool = False
    ) -> torch.Tensor:
        """The residual stream after the last block ([b, t, d]); `logits(features)` = forward.
        checkpoint=True (under autograd): activation checkpointing per residual block, only each
        block's input kept for the backward pass, the rest recomputed there."""
        return self._blocks(tokens, segment_pos, None, return_cache=False, checkpoint=checkpoint)[0]

    # -- public API -----------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, segment_pos: torch.Tensor) -> torch.Tensor:
        """Full forward pass: int [b, t] tokens and segment positions -> logits [b, t, v]."""
        return self._run(tokens, segment_pos, None, return_cache=False)[0]

    def prefill(
        self, tokens: torch.Tensor, segment_pos: torch.Tensor, *, logits: str = "all"
    ) -> tuple[torch.Tensor, Cache]:
        """Process a prompt: logits [b, t, v] (or [b, 1, v] with logits="last") and the cache."""
        _check_logits_option(logits)
        return self._run(tokens, segment_pos, None, return_cache=True, logits=logits)

    def decode(
        self, tokens: torch.Tensor, segment_pos: torch.Tensor, cache: Cache
    ) -> tuple[torch.Tensor, Cache]:
        """One step: tokens and segment_pos int [b, 1], cache from prefill or decode.

        Returns logits [b, 1, v] and the new cache. impl="reference" leaves the old cache
        unchanged; impl="optimized" updates its tensors in place (the old cache is consumed:
        keep a `models.torch.optimized.copy_cache` to decode from the same point again).
        """
        if not isinstance(cache, Cache):
            raise TypeError(
                f"cache must be the Cache returned by prefill/decode, got {type(cache).__name__}"
            )
        check_inputs(tokens, segment_pos)
        if tokens.shape[1] != 1:
            raise ValueError(
                f"decode takes one token per row ([b, 1]), got shape {list(tokens.shape)}; "
                "use prefill for a prompt"
            )
        if tokens.shape[0] != cache.batch_size:
            raise ValueError(
                f"decode got a batch of {tokens.shape[0]} but the cache holds a batch of "
                f"{cache.batch_size}; prefill a cache for this batch size"
            )
        if len(cache.blocks) != len(self.blocks):
            raise ValueError(
                f"cache has {len(cache.blocks)} blocks but the model has {len(self.blocks)}"
            )
        return self._run(tokens, segment_pos, cache, return_cache=True)


__all__ = ["IMPLS", "AttentionCache", "Cache", "Model", "RecurrentCache"]
