"""transformers-gemma: GemmaForCausalLM with one KV head (MQA), SDPA attention, DynamicCache.

Only for Gemma-flavoured MQA configs (gemma-* presets). Its cache grows in place, so each timed
repetition gets a fresh copy (outside the timed region)."""

from __future__ import annotations

import copy
import inspect

import torch

from bench.impls.base import no_checkpointing, torch_train_step, tree_nbytes
from models.config import gemma_incompatibility


def supports(cfg) -> str | None:
    return gemma_incompatibility(cfg)


def call_with_cache(hf, tokens, cache, **kwargs):
    """One forward with a KV cache -> (logits, cache), across transformers' rename of
    `past_key_values` to `cache` (5.2x). The keyword is looked up in the signature: forward()
    takes **kwargs, so the wrong name would be accepted and silently ignored."""
    name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    out = hf(tokens, use_cache=True, **{name: cache}, **kwargs)
    new_cache = getattr(out, "cache", None)
    return out.logits, out.past_key_values if new_cache is None else new_cache


class Handle:
    def __init__(self, hf, backend):
        self.hf = hf.eval()
        self.backend = backend

    @torch.no_grad()
    def prefill(self, tokens, pos):
        return call_with_cache(self.hf, tokens, None, position_ids=pos, logits_to_keep=1)

    @torch.no_grad()
    def decode(self, token, pos, cache):
        return call_with_cache(self.hf, token, cache, position_ids=pos)

    def fresh(self, cache, steps):
        return copy.deepcopy(cache)

    def train_step(self, checkpoint: bool = False):
        if checkpoint:
            raise no_checkpointing("transformers-gemma")
        return torch_train_step(
            self.hf, lambda tokens, pos: self.hf(tokens, position_ids=pos, use_cache=False).logits
        )

    def cache_nbytes(self, cache) -> int:
        return tree_nbytes(cache)


def build(source, dtype, backend) -> Handle:
    from models.torch import to_gemma

    return Handle(to_gemma(source), backend)
