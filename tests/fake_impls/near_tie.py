"""A correct model whose greedy pick breaks near-ties the other way (the second-best token, as a
bf16 argmax against a float32 one might) and whose logits differ by a relative 1e-7: generating
from its own picks it follows another token stream than the reference. The gate must pass it."""

import torch

from bench.backends import TorchBackend
from bench.impls import ours_torch


def supports(cfg):
    return None


class SecondBest(TorchBackend):
    def argmax_next(self, logits):
        return logits[:, -1].topk(2, dim=-1).indices[:, 1:]


class Handle(ours_torch.Handle):
    @torch.no_grad()
    def prefill(self, tokens, pos):
        logits, cache = super().prefill(tokens, pos)
        return logits * (1 + 1e-7), cache

    @torch.no_grad()
    def decode(self, token, pos, cache):
        logits, cache = super().decode(token, pos, cache)
        return logits * (1 + 1e-7), cache


def build(source, dtype, backend):
    return Handle(source, SecondBest(backend.device))
