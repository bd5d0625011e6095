"""A planted ring-buffer defect: once the stream passes the local-attention window, each decode
step's key and value are also written over the previous token's slot (an off-by-one slot), so
later queries lose a key they should see. Exact before the window; the gate must catch it."""

import torch

from bench.impls import ours_torch
from models.torch.blocks import AttentionCache


def supports(cfg):
    return None


class Handle(ours_torch.Handle):
    @torch.no_grad()
    def decode(self, token, pos, cache):
        logits, cache = super().decode(token, pos, cache)
        window = self.model.config.attention_window
        q = int(pos[0, 0])
        if window is not None and q >= window:
            for c in cache.blocks:
                if isinstance(c, AttentionCache):
                    ring = c.k.shape[1]
                    s, prev = q % ring, (q - 1) % ring
                    c.k[:, prev], c.v[:, prev] = c.k[:, s], c.v[:, s]
        return logits, cache


def build(source, dtype, backend):
    return Handle(source, backend)
