"""ours-torch-optimized: models.torch.Model(impl="optimized") on the source model's weights."""

from __future__ import annotations

from bench.impls import ours_torch


def supports(cfg) -> str | None:
    return None


class Handle(ours_torch.Handle):
    def fresh(self, cache):
        from models.torch.optimized import copy_cache

        return copy_cache(cache)  # decode updates its cache in place


def build(source, dtype, backend) -> Handle:
    from models.torch.optimized import check_device

    check_device(source.embedder.input_embedding)  # a clear error before any work
    return Handle(source.use_impl("optimized"), backend)
