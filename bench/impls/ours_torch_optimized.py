"""ours-torch-optimized: models.torch.Model(impl="optimized") on the source model's weights.

Prefill is models.torch.optimized.GraphedPrefill: on a GPU one CUDA-graph replay per call (the
graph captured on the first call of each shape). Training uses models.torch.optimized.chunked_loss
(no [b, t, vocab] logits in memory). Decode runs through models.torch.optimized.StaticDecoder: on
a GPU each step is one CUDA-graph replay of the torch.compile'd step over static caches sized
for the generation (`fresh(cache, steps)`: kept per batch, reloaded from the prefilled cache,
rebuilt when it has too little room). On the CPU both run eagerly.
"""

from __future__ import annotations

from bench.impls import ours_torch


def supports(cfg) -> str | None:
    return None


class Handle(ours_torch.Handle):
    def __init__(self, model, backend):
        from models.torch.optimized import GraphedPrefill

        super().__init__(model, backend)
        # the decoder's attention kernel (on a GPU) reads the filled slots of a global cache
        # only; the masked SDPA elsewhere reads them all
        self.reads_reserve = self.reads_reserve and not backend.on_gpu
        self._decoder = None  # one at a time: a throughput search would otherwise keep them all
        self._prefill = GraphedPrefill(self.model, logits="last")

    def prefill(self, tokens, pos):
        return self._prefill(tokens, pos)

    def fresh(self, cache, steps):
        """The static decoder loaded with `cache`: the one held when it has this batch and room
        for the steps, else a new one (compiled and captured on its first step) with room for
        exactly the cache and the steps."""
        import torch

        from models.torch.optimized import StaticDecoder

        dec, need = self._decoder, cache.length + steps
        if dec is None or dec.batch_size != cache.batch_size or dec.capacity < need:
            self._decoder = dec = None  # free the old buffers and graph first
            torch._dynamo.reset()  # and the old decoder's compiled step (a recompile each)
            self.backend.free()
            dec = StaticDecoder(self.model, cache, capacity=need)
            self._decoder = dec
        else:
            dec.load(cache)
        return dec

    def decode(self, token, pos, cache):
        from models.torch.optimized import StaticDecoder

        if isinstance(cache, StaticDecoder):
            return cache.step(token, pos), cache
        return super().decode(token, pos, cache)

    def train_step(self, checkpoint: bool = False):
        from bench.impls.base import torch_train_step
        from models.torch.optimized import chunked_loss

        model = self.model
        return torch_train_step(
            model,
            model,
            lambda tokens, pos, targets: chunked_loss(
                model, tokens, pos, targets, checkpoint=checkpoint
            ),
        )

    def cache_nbytes(self, cache) -> int:
        from models.torch.optimized import StaticDecoder

        return (cache.cache() if isinstance(cache, StaticDecoder) else cache).nbytes()


def build(source, dtype, backend) -> Handle:
    from models.torch.optimized import check_device

    check_device(source.embedder.input_embedding)  # a clear error before any work
    return Handle(source.use_impl("optimized"), backend)
