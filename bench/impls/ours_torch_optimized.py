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

# static decoders (each a compiled step of its shapes) built before torch.compile is reset:
# below torch._dynamo's recompile limit (8)
MAX_BUILT = 3
SMALL = 8  # a held decoder stays beside a new one of at least SMALL times its batch


def supports(cfg) -> str | None:
    return None


class Handle(ours_torch.Handle):
    def __init__(self, model, backend):
        from models.torch.optimized import GraphedPrefill

        super().__init__(model, backend)
        # the decoder's attention kernel (on a GPU) reads the filled slots of a global cache
        # only; the masked SDPA elsewhere reads them all
        self.reads_reserve = self.reads_reserve and not backend.on_gpu
        # the static decoders held, by batch (a throughput point's gate at a small batch and its
        # generation at a large one each keep theirs: no rebuild, no recompile between lengths)
        self._decoders = {}
        self._built = 0  # decoders built since the last reset of torch.compile's caches
        self._prefill = GraphedPrefill(self.model, logits="last")

    def prefill(self, tokens, pos):
        return self._prefill(tokens, pos)

    def fresh(self, cache, steps):
        """The static decoder of this batch loaded with `cache`: the one held when it has room
        for the steps, else a new one (compiled and captured on its first step) with room for
        exactly the cache and the steps. A new decoder is built alone but for the held ones of
        at most 1/SMALL of its batch (a throughput gate's decoder beside its generation's; a
        probe of the search never shares the memory with another probe's), and after MAX_BUILT
        others drops them all and resets torch.compile first (each compiled shape stays in its
        cache, which runs the step uncompiled past its recompile limit)."""
        import torch

        from models.torch.optimized import StaticDecoder

        batch, need = cache.batch_size, cache.length + steps
        dec = self._decoders.get(batch)
        if dec is not None and dec.capacity >= need:
            dec.load(cache)
            return dec
        dec = None
        self._decoders = {b: d for b, d in self._decoders.items() if b * SMALL <= batch}
        if self._built >= MAX_BUILT:
            self._decoders.clear()
            torch._dynamo.reset()
            self._built = 0
        self.backend.free()  # the dropped decoders' buffers and graphs, before the new one
        dec = self._decoders[batch] = StaticDecoder(self.model, cache, capacity=need)
        self._built += 1
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
