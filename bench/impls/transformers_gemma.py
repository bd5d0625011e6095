"""transformers-gemma: GemmaForCausalLM with one KV head (MQA), SDPA attention, DynamicCache.

Only for Gemma-flavoured MQA configs (gemma-* presets). Its cache grows in place, so each timed
repetition gets a fresh copy (outside the timed region)."""

from __future__ import annotations

import copy

import torch

from bench.impls.base import torch_train_step, tree_nbytes
from models.config import gemma_incompatibility


def supports(cfg) -> str | None:
    return gemma_incompatibility(cfg)


def _call(hf, tokens, cache, **kwargs):
    """One forward with a cache, across transformers' `past_key_values` -> `cache` rename."""
    try:
        out = hf(tokens, cache=cache, use_cache=True, **kwargs)
    except TypeError:
        out = hf(tokens, past_key_values=cache, use_cache=True, **kwargs)
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = out.past_key_values
    return out.logits, new_cache


class Handle:
    def __init__(self, hf, backend):
        self.hf = hf.eval()
        self.backend = backend

    @torch.no_grad()
    def prefill(self, tokens, pos):
        return _call(self.hf, tokens, None, position_ids=pos, logits_to_keep=1)

    @torch.no_grad()
    def decode(self, token, pos, cache):
        return _call(self.hf, token, cache, position_ids=pos)

    def fresh(self, cache):
        return copy.deepcopy(cache)

    def train_step(self):
        return torch_train_step(
            self.hf, lambda tokens, pos: self.hf(tokens, position_ids=pos, use_cache=False).logits
        )

    def cache_nbytes(self, cache) -> int:
        return tree_nbytes(cache)


def build(source, dtype, backend) -> Handle:
    from models.torch import to_gemma

    return Handle(to_gemma(source), backend)
