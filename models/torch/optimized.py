"""The optimized path of the PyTorch model (`Model(cfg, impl="optimized")`): same modules, same
state_dict, different ops. Selected per block by `block.impl`; models/torch/blocks.py calls these.

- Recurrent block: the Triton Conv1D and RG-LRU kernels (kernels/) for prefill and training (one
  pass each way, autograd through their backward kernels); for a one-token decode step the
  `*_step` kernels, which update the cache's conv and RG-LRU state in place.
- Attention block: PyTorch's scaled_dot_product_attention (fused kernels, no [b, n, t, s] logits
  in memory) with the document / window / causal mask as a boolean [b, 1, t, s] mask, the one
  key/value head broadcast to the query heads. Decode writes the new key and value into the cache
  in place: local attention keeps a ring buffer of window + 1 slots (the window's keys and the
  query's own), global attention a buffer that doubles when full.

Decode therefore consumes its cache: `logits, cache = m.decode(tok, pos, cache)` returns the same
Cache object, updated (the reference path returns a new one). Copy a cache (`copy_cache`) to
decode twice from the same point.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

import torch
import torch.nn.functional as F

from kernels._triton import AVAILABLE as TRITON_AVAILABLE
from kernels.conv1d import conv1d, conv1d_step, conv1d_step_ref
from kernels.cross_entropy import xent_grad_ as _xent_grad_
from kernels.fused import gelu_mul, gelu_mul_ref, rms_norm, rms_norm_ref
from kernels.rglru import rg_lru, rg_lru_step, rg_lru_step_ref
from models.torch import layers


def check_device(x: torch.Tensor) -> None:
    """The Triton kernels need a CUDA tensor (or the CPU under TRITON_INTERPRET=1)."""
    if not TRITON_AVAILABLE:
        raise RuntimeError(
            "impl='optimized' needs Triton: pip install 'griffin-bench[triton]'; "
            "impl='reference' runs without it"
        )
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"impl='optimized' runs its Triton kernels on a CUDA device; got a {x.device.type} "
            "tensor (set TRITON_INTERPRET=1 to run them slowly on the CPU, or use "
            "impl='reference')"
        )


# `plain=True` (below) swaps our Triton kernels for their plain-torch `_ref` twins: for a step
# that torch.compile fuses (StaticDecoder), where Inductor can merge plain ops with their
# neighbours (a residual add with the next norm, the gates with the recurrence) but must launch an
# opaque Triton kernel on its own.


def norm(module, x: torch.Tensor, plain: bool = False) -> torch.Tensor:
    """An RMSNorm module's function as one fused kernel (kernels.fused.rms_norm)."""
    return (rms_norm_ref if plain else rms_norm)(x, module.scale, module.eps)


def mlp_forward(mlp, x: torch.Tensor, plain: bool = False) -> torch.Tensor:
    """MLPBlock.forward as two matmuls on the halves of ffw_up.w [2, d, m] (the einsum of the
    reference path copies the whole weight into a new layout on every call) and one fused
    gelu(gate) * up kernel."""
    up = mlp.ffw_up
    if plain:  # a decode step: one batched GEMV over both halves (one read of x, one launch)
        gate, lin = torch.matmul(x.reshape(1, -1, x.shape[-1]), up.w).unflatten(1, x.shape[:-1])
    else:
        gate, lin = x @ up.w[0], x @ up.w[1]
    if up.b is not None:
        gate, lin = gate + up.b[0], lin + up.b[1]
    return mlp.ffw_down((gelu_mul_ref if plain else gelu_mul)(gate, lin))


def block_diagonal(lin, x: torch.Tensor) -> torch.Tensor:
    """BlockDiagonalLinear.forward as one strided batched matmul (no copy of x or w)."""
    h = lin.num_blocks
    xb = x.reshape(-1, h, x.shape[-1] // h).transpose(0, 1)  # [h, N, i], a view
    y = torch.baddbmm(lin.b[:, None, :], xb, lin.w)  # [h, N, j]
    return y.transpose(0, 1).reshape(x.shape)


def recurrent_forward(blk, x, segment_pos, cache, return_cache, plain: bool = False):
    """RecurrentBlock.forward on the kernels. x: [b, t, d] -> ([b, t, d], cache or None).
    `plain`: a decode step in plain torch ops (see norm)."""
    from models.torch.blocks import RecurrentCache  # (blocks imports this module)

    check_device(x)
    conv, lru = blk.conv_1d, blk.rg_lru
    y = blk.linear_y(x)  # the gelu is fused into the product below
    xb = blk.linear_x(x)
    if cache is not None and x.shape[1] == 1 and not torch.is_grad_enabled():
        hs = recurrent_step(blk, xb[:, 0], segment_pos, cache, plain)
        mul = gelu_mul_ref if plain else gelu_mul
        return blk.linear_out(mul(y, hs[:, None])), cache if return_cache else None
    xb, conv_state = conv1d(xb, conv.w, conv.b, segment_pos, None if cache is None else cache.conv)
    xb, h_last = rg_lru(
        xb,
        block_diagonal(lru.input_gate, xb),
        block_diagonal(lru.a_gate, xb),
        lru.a_param,
        segment_pos,
        None if cache is None else cache.rg_lru,
    )
    out = blk.linear_out(gelu_mul(y, xb))
    return out, RecurrentCache(h_last, conv_state) if return_cache else None


def recurrent_step(blk, xb, segment_pos, cache, plain: bool = False) -> torch.Tensor:
    """One decode step of a recurrent block between its projections: linear_x's output xb
    [b, d] through the Conv1D and RG-LRU steps (updating cache.conv and cache.rg_lru in place)
    -> the RG-LRU output [b, d]."""
    conv, lru = blk.conv_1d, blk.rg_lru
    reset = segment_pos[:, 0] == 0
    conv_step, lru_step = (
        (conv1d_step_ref, rg_lru_step_ref) if plain else (conv1d_step, rg_lru_step)
    )
    xs = conv_step(xb.contiguous(), conv.w, conv.b, cache.conv, reset)
    return lru_step(
        xs,
        block_diagonal(lru.input_gate, xs).contiguous(),
        block_diagonal(lru.a_gate, xs).contiguous(),
        lru.a_param,
        cache.rg_lru,
        reset,
    )


def _sdpa_mqa(q, k, v, mask):
    """q [b, t, n, h]; k, v [b, s, h] (one head); mask bool [b, t, s], or None for plain causal
    attention (s = t) -> [b, t, n * h]."""
    b, _, n, h = q.shape
    s = k.shape[1]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k[:, None].expand(b, n, s, h),
        v[:, None].expand(b, n, s, h),
        attn_mask=None if mask is None else mask[:, None],
        is_causal=mask is None,
    )
    return out.transpose(1, 2).flatten(-2)


# Whether the chunk being run holds one document per row (no segment_pos == 0 after its first
# token), set by Model._blocks once per forward, before any block's work is queued: asking in
# every attention layer would sync the host with the GPU there, and at batch 1, where the host
# issues kernels about as fast as the GPU runs them, each sync serialises the two. (At git
# 2e5132b, with a sync in each of its 18 layers, Gemma-2B's prefill measured 38.5 ms on the H100,
# against 23.8 ms before on another machine: the sync's share is inferred, not isolated.)
_ONE_DOCUMENT: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "one_document", default=None
)


def one_document(segment_pos) -> bool:
    """True when no row of segment_pos starts a document after its first token (one host sync)."""
    return not bool((segment_pos[:, 1:] == 0).any())


@contextlib.contextmanager
def one_document_hint(segment_pos):
    """Within: the attention layers of this forward use the answer of `one_document`, asked here
    once (unless an enclosing hint, such as a CUDA-graph capture's, already holds one)."""
    if _ONE_DOCUMENT.get() is not None:
        yield
        return
    token = _ONE_DOCUMENT.set(one_document(segment_pos))
    try:
        yield
    finally:
        _ONE_DOCUMENT.reset(token)


def hint_as_now():
    """A factory of contexts that hold the attention hint in force now (none if none is): for
    a recomputation later, outside the forward's `one_document_hint` (activation checkpointing)."""
    value = _ONE_DOCUMENT.get()

    @contextlib.contextmanager
    def again():
        token = _ONE_DOCUMENT.set(value)
        try:
            yield
        finally:
            _ONE_DOCUMENT.reset(token)

    return again


def _plainly_causal(segment_pos, t: int, window: int | None) -> bool:
    """True when the mask of a chunk without cache is just causal: one document per row and no key
    out of the window (t - 1 <= window). Then SDPA runs its causal flash kernel, which skips the
    blocks above the diagonal, instead of reading an explicit [t, t] mask through every block."""
    if window is not None and t - 1 > window:
        return False
    known = _ONE_DOCUMENT.get()
    return one_document(segment_pos) if known is None else known


def attention_forward(blk, x, segment_pos, cache, length, return_cache):
    """AttentionBlock.forward with fused attention and in-place cache writes."""
    from models.torch.blocks import doc_starts

    cfg = blk.cfg
    b, t, _ = x.shape
    q, k, v = blk.project(x, segment_pos)
    q_pos = torch.arange(length, length + t, device=x.device)
    doc_start = doc_starts(segment_pos, q_pos, cache)
    window = cfg.attention_window

    if cache is not None and t == 1:  # decode: write first, then attend over the whole buffer
        cache = _ensure_room(blk, cache, length + 1)
        _write(cache, k, v, length, window)
        keys, values, k_pos = cache.k, cache.v, cache.pos
    elif cache is None:
        keys, values, k_pos = k, v, q_pos
    else:  # a chunk after a cache: the cache's keys, then the chunk's
        keys = torch.cat([cache.k, k.to(cache.k.dtype)], dim=1)
        values = torch.cat([cache.v, v.to(cache.v.dtype)], dim=1)
        k_pos = torch.cat([cache.pos, q_pos])
    if cache is None and _plainly_causal(segment_pos, t, window):
        mask = None
    else:
        mask = layers.attention_mask(q_pos, k_pos, doc_start, window)
    out = blk.proj_final(_sdpa_mqa(q, keys.to(q.dtype), values.to(q.dtype), mask))
    if not return_cache:
        return out, None
    if cache is None:
        cache = empty_attention_cache(cfg, b, t, x.dtype, x.device)
    elif t == 1:
        cache.doc_start = doc_start[:, -1]
        return out, cache
    cache = _ensure_room(blk, cache, length + t)
    _write(cache, k, v, length, window)
    cache.doc_start = doc_start[:, -1]
    return out, cache


def slots_for(cfg, n_tokens: int) -> int:
    """Slots of an optimized attention cache: window + 1 (local) or room for n_tokens (global)."""
    from models.torch.blocks import global_capacity

    window = cfg.attention_window
    return window + 1 if window is not None else global_capacity(n_tokens)


def empty_attention_cache(cfg, batch: int, n_tokens: int, dtype, device):
    from models.torch.blocks import attention_cache

    return attention_cache(cfg, batch, slots_for(cfg, n_tokens), dtype, device)


def _ensure_room(blk, cache, n_tokens: int):
    """A global cache grows (doubling) to hold n_tokens; a ring buffer never needs to."""
    from models.torch.blocks import grow_global

    return grow_global(blk.cfg, cache, n_tokens)


def _write(cache, k, v, length: int, window: int | None) -> None:
    """Store keys/values k, v [b, t, h] of stream indices length .. length + t - 1, in place
    (local attention: a ring of window + 1 slots)."""
    from models.torch.blocks import write_kv_

    write_kv_(cache, k, v, length, None if window is None else window + 1)


def copy_cache(cache):
    """A deep copy of a Cache (the optimized decode updates its cache in place)."""
    import copy

    from models.torch.model import Cache

    blocks = [
        type(c)(**{f: getattr(c, f).clone() for f in c.__dataclass_fields__}) for c in cache.blocks
    ]
    return Cache(copy.copy(blocks), cache.length)


def _attention_step_static(blk, x, segment_pos, cache, length_t, kernel: bool = False):
    """One decode step of an attention block whose stream position is a device tensor (so the
    step can be captured in a CUDA graph): writes k, v into the static cache, attends over it."""
    q, k, v = blk.proj_q(x), blk.proj_k(x), blk.proj_v(x)
    return blk.proj_final(_attend_static(blk, q, k, v, segment_pos, cache, length_t, kernel))


def _attend_static(blk, q, k, v, segment_pos, cache, length_t, kernel: bool = False):
    """The step's attention after the projections: q [b, 1, n * h], k, v [b, 1, h] (before
    RoPE), k, v written into the static cache at length_t -> [b, 1, n * h]. kernel: attend with
    kernels.decode_attention (the query heads as one tile's rows, the slots split across
    programs; RoPE on q and k and the cache write done there) instead of RoPE, the cache
    writes and SDPA as separate ops."""
    from models.torch.blocks import doc_starts

    q_pos = length_t.view(1)
    doc_start = doc_starts(segment_pos, q_pos, cache)  # [b, 1]
    cfg = blk.cfg
    window = cfg.attention_window
    slot = q_pos % (window + 1) if window is not None else q_pos
    if kernel and cache.k.dtype == q.dtype:  # the kernel rotates q, k and writes k, v itself
        from kernels.decode_attention import mqa_decode_write_op

        cache.pos.index_copy_(0, slot, q_pos)
        mask = layers.attention_mask(q_pos, cache.pos, doc_start, window)
        cache.doc_start.copy_(doc_start[:, 0])
        b, n, h = q.shape[0], cfg.num_heads, cfg.head_dim
        out = mqa_decode_write_op(
            q[:, 0].unflatten(-1, (n, h)).contiguous(), cache.k, cache.v, mask[:, 0], h**-0.5,
            k[:, 0], v[:, 0], slot, segment_pos[:, 0], cfg.rope_dims, float(cfg.rope_base),
            window is None,  # global: slots past this one are empty (filled in order)
        )  # fmt: skip
        return out.reshape(b, 1, n * h)
    q, k, v = blk.rope(q, k, v, segment_pos)
    cache.k.index_copy_(1, slot, k.to(cache.k.dtype))
    cache.v.index_copy_(1, slot, v.to(cache.v.dtype))
    cache.pos.index_copy_(0, slot, q_pos)
    mask = layers.attention_mask(q_pos, cache.pos, doc_start, window)
    cache.doc_start.copy_(doc_start[:, 0])  # (a cache in another dtype than q: SDPA)
    return _sdpa_mqa(q, cache.k.to(q.dtype), cache.v.to(q.dtype), mask)


class StaticDecoder:
    """Decode steps of an optimized Model on static buffers, replayed as one CUDA graph.

        dec = StaticDecoder(model, cache, capacity=cache.length + 256)   # after prefill
        logits = dec.step(tokens, segment_pos)     # int [b, 1] each; as model.decode, in place
        dec.load(other_cache)                      # restart from another cache of this batch

    Every step runs the same kernels on the same addresses: the stream position is a device
    tensor, local attention a ring buffer of window + 1 slots, global attention a buffer of
    `capacity` slots allocated up front (so no step allocates or syncs). On a CUDA device the
    step is first compiled with torch.compile (`compile=True`, the default there: the step then
    runs in plain torch ops, our kernels' `_ref` twins, which Inductor fuses with their
    neighbours into a few kernels between the matmuls), run twice on a copy of the state
    (compiling the kernels, warming cuBLAS), then
    captured; later steps replay the graph. The returned logits are a static buffer that the
    next step overwrites. Elsewhere (CPU) the same step runs eagerly and uncompiled.

    `attention_kernel` (default: on CUDA): attention layers attend with kernels.decode_attention
    (one program reads a span of cache slots for all query heads; the kernel also applies RoPE
    to q and the new key and writes the new key and value into the cache) instead of RoPE,
    cache writes and SDPA, which pads the step's one query per head to a prefill tile (147 us
    a layer at RecurrentGemma-2B shape, batch 16, on an H100; docs/h100.md).

    `pdl` (with `gemv`; default: on a GPU of compute capability 9 or more, see kernels.gemv:
    RG-2B's step 2.436 -> 2.375 ms on the H100): the GEMVs launched with programmatic dependent
    launch (each prefetches the first tile of its weight rows into L2 before waiting for the
    kernel ahead of it, and lets the next one in after its weight loop).

    `gemv` (default: at batch 1 on CUDA): the step's matmuls as fused GEMVs (kernels.gemv, see
    _gemv_step). Their MLP up-projection reads a copy of each `ffw_up.w` transposed to
    [2, N, K] (whole rows per program), made here: 2.0 GB at RecurrentGemma-2B. A weight changed
    in place later (its version moves, as under an optimizer step) is copied again before the
    next step.
    """

    def __init__(
        self,
        model,
        cache,
        capacity: int | None = None,
        compile: bool = True,
        gemv: bool | None = None,
        attention_kernel: bool | None = None,
        pdl: bool | None = None,
    ):
        from models.torch.blocks import AttentionCache

        self.model = model
        self.capacity = capacity or cache.length + 256
        window = model.config.attention_window
        blocks = []
        for c in cache.blocks:
            if isinstance(c, AttentionCache):
                n = window + 1 if window is not None else self.capacity
                blocks.append(
                    AttentionCache(
                        k=c.k.new_zeros(c.k.shape[0], n, c.k.shape[2]),
                        v=c.v.new_zeros(c.v.shape[0], n, c.v.shape[2]),
                        pos=c.pos.new_full((n,), -1),
                        doc_start=c.doc_start.clone(),
                    )
                )
            else:
                blocks.append(type(c)(c.rg_lru.clone(), c.conv.clone()))
        self.blocks = blocks
        batch = cache.batch_size
        device = model.embedder.input_embedding.device
        self.length = torch.zeros((), dtype=torch.long, device=device)
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.segment_pos = torch.zeros(batch, 1, dtype=torch.long, device=device)
        # segment_pos == 0 per sequence, written by step() before the graph runs: computed in
        # the compiled step, Inductor recomputed it (select + eq, ~1.1 us) before each of our
        # operators that reads it, two per recurrent layer (H100 profile at 8e2cfe5)
        self.reset = torch.zeros(batch, dtype=torch.bool, device=device)
        self.graph = None
        self.logits = None
        self.compile = compile and self.tokens.is_cuda
        # batch 1: the step's matmuls are GEMVs with the norms, residuals, gelu and soft cap
        # fused in (kernels.gemv); larger batches keep cuBLAS, which reads the weights once too
        self.gemv = (batch == 1 and self.tokens.is_cuda) if gemv is None else gemv
        hopper = self.tokens.is_cuda and torch.cuda.get_device_capability(device)[0] >= 9
        self.pdl = (self.gemv and hopper) if pdl is None else pdl
        self.attention_kernel = (
            self.tokens.is_cuda if attention_kernel is None else attention_kernel
        )
        self.up_rows = []  # per block: its MLP up-projection as [2, N, K] for the row GEMV
        self.up_versions = []
        if self.gemv:
            check_device(self.tokens)
            for blk in model.blocks:
                w = blk.mlp_block.ffw_up.w
                self.up_rows.append(w.detach().transpose(1, 2).contiguous())
                self.up_versions.append(w._version)
        self.load(cache)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def load(self, cache) -> None:
        """Copy a cache (from prefill or decode, optimized layout) into the static buffers."""
        from models.torch.blocks import AttentionCache

        if cache.batch_size != self.batch_size:
            raise ValueError(
                f"this decoder holds a batch of {self.batch_size}, the cache {cache.batch_size}"
            )
        if cache.length + 1 > self.capacity:
            raise ValueError(
                f"the cache holds {cache.length} tokens; this decoder has room for "
                f"{self.capacity}: build one with a larger capacity"
            )
        window = self.model.config.attention_window
        for mine, c in zip(self.blocks, cache.blocks, strict=True):
            if isinstance(mine, AttentionCache):
                n = c.k.shape[1]
                if window is not None and n != window + 1:
                    raise ValueError(
                        f"a local-attention cache of {n} slots: StaticDecoder takes the "
                        f"optimized layout (window + 1 = {window + 1} slots), from an "
                        "impl='optimized' prefill"
                    )
                if window is None:  # global: token i lives in slot i; the rest is empty
                    n = cache.length
                    mine.pos.fill_(-1)
                mine.k[:, :n].copy_(c.k[:, :n])
                mine.v[:, :n].copy_(c.v[:, :n])
                mine.pos[:n].copy_(c.pos[:n])
                mine.doc_start.copy_(c.doc_start)
            else:
                mine.rg_lru.copy_(c.rg_lru)
                mine.conv.copy_(c.conv)
        self.length.fill_(cache.length)
        self.host_length = cache.length

    def _step(self) -> torch.Tensor:
        from models.config import RECURRENT

        if self.gemv:
            return self._gemv_step()
        m = self.model
        plain = self.compile  # compiled: plain torch ops, which Inductor fuses (see norm)
        x = m.embed(self.tokens)
        for blk, c in zip(m.blocks, self.blocks, strict=True):
            h = norm(blk.temporal_pre_norm, x, plain)
            if blk.kind == RECURRENT:
                mixed, _ = recurrent_forward(
                    blk.temporal_block, h, self.segment_pos, c, False, plain
                )
            else:
                mixed = _attention_step_static(
                    blk.temporal_block, h, self.segment_pos, c, self.length, self.attention_kernel
                )
            residual = mixed + x
            x = mlp_forward(blk.mlp_block, norm(blk.channel_pre_norm, residual, plain), plain)
            x = x + residual
        self.length += 1
        return m.logits(x)

    def _gemv_step(self) -> torch.Tensor:
        """The step at batch 1 as a chain of fused GEMVs (kernels.gemv): per block, norm + the
        projections that read its input (one launch), the mixing, out-projection + residual,
        norm + gated up-projection + gelu·mul, down-projection + residual; the logits as norm +
        GEMV + soft cap. A recurrent block's Conv1D step is the epilogue of its x/y GEMV (the
        GEMV program that computes a channel also convolves it and shifts its state; as plain
        ops, the H100 profile showed about five small Inductor kernels around it, ~6 us a
        recurrent layer), and one kernel
        does the gates, the RG-LRU step and gelu·mul (kernels.recurrent_step); attention's
        mixing is the same as the compiled step's."""
        from kernels.gemv import gemv_conv_op, gemv_gated_up_op, gemv_op
        from kernels.recurrent_step import rg_lru_gated_step_op
        from models.config import RECURRENT

        m = self.model
        x = m.embed(self.tokens)[:, 0]  # [1, d]
        reset = self.reset
        pdl = self.pdl
        for i, (blk, c) in enumerate(zip(m.blocks, self.blocks, strict=True)):
            pre, tb = blk.temporal_pre_norm, blk.temporal_block
            if blk.kind == RECURRENT:
                lins, conv, lru = (tb.linear_y, tb.linear_x), tb.conv_1d, tb.rg_lru
                # the x branch's Conv1D step runs on the GEMV's outputs, its state in place
                y, xs = gemv_conv_op(
                    x, [lin.weight for lin in lins], [lin.bias for lin in lins], pre.scale,
                    pre.eps, conv.w, conv.b, c.conv, reset, pdl,
                )  # fmt: skip
                gx, ga = lru.input_gate, lru.a_gate
                mixed = rg_lru_gated_step_op(
                    xs, y, gx.w, gx.b, ga.w, ga.b, lru.a_param, c.rg_lru, reset
                )  # the gates, the RG-LRU step and gelu(y) * its output in one kernel
                out = tb.linear_out
            else:
                lins = (tb.proj_q, tb.proj_k, tb.proj_v)
                q, k, v = gemv_op(x, [lin.weight for lin in lins], [lin.bias for lin in lins],
                                  None, pre.scale, pre.eps, None, pdl)  # fmt: skip
                q, k, v = q[:, None], k[:, None], v[:, None]
                mixed = _attend_static(
                    tb, q, k, v, self.segment_pos, c, self.length, self.attention_kernel
                )[:, 0]
                out = tb.proj_final
            (residual,) = gemv_op(mixed, [out.weight], [out.bias], x, None, 0.0, None, pdl)
            mlp, post = blk.mlp_block, blk.channel_pre_norm
            up = gemv_gated_up_op(
                residual, self.up_rows[i], mlp.ffw_up.b, post.scale, post.eps, True, pdl
            )
            down = mlp.ffw_down
            (x,) = gemv_op(up, [down.weight], [down.bias], residual, None, 0.0, None, pdl)
        self.length += 1
        fin = m.final_norm
        (logits,) = gemv_op(
            x, [m.embedder.input_embedding], [None], None, fin.scale, fin.eps,
            m.config.logits_soft_cap or None, pdl,
        )  # fmt: skip
        return logits[:, None]

    def _state(self) -> list[torch.Tensor]:
        out = [self.length]
        for c in self.blocks:
            out += [getattr(c, f) for f in c.__dataclass_fields__]
        return out

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, segment_pos: torch.Tensor) -> torch.Tensor:
        if tokens.shape != self.tokens.shape or segment_pos.shape != self.segment_pos.shape:
            raise ValueError(
                f"tokens and segment_pos must be [{self.batch_size}, 1]; got "
                f"{list(tokens.shape)}, {list(segment_pos.shape)}"
            )
        if self.host_length + 1 > self.capacity:
            raise ValueError(f"this decoder is full ({self.capacity} tokens)")
        self.tokens.copy_(tokens)
        self.segment_pos.copy_(segment_pos)
        torch.eq(self.segment_pos[:, 0], 0, out=self.reset)
        self.host_length += 1
        self._refresh_up_rows()
        if not self.tokens.is_cuda:
            return self._step()
        if self.graph is None:
            saved = [t.clone() for t in self._state()]
            fn = self._warm_up()
            for t, s in zip(self._state(), saved, strict=True):
                t.copy_(s)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = fn()
        self.graph.replay()
        return self.logits

    def _refresh_up_rows(self) -> None:
        """Re-copy an up-projection changed in place since the last step (an optimizer step
        between decodes bumps the weight's version), into the same buffer the graph reads."""
        if not self.gemv:
            return
        for i, blk in enumerate(self.model.blocks):
            w = blk.mlp_block.ffw_up.w
            if w._version != self.up_versions[i]:
                self.up_rows[i].copy_(w.detach().transpose(1, 2))
                self.up_versions[i] = w._version

    def _warm_up(self):
        """Run the step twice off the capture (compiling Inductor's and our Triton kernels,
        warming cuBLAS); returns the function to capture. A step that torch.compile cannot
        compile falls back to the eager step with a warning (`self.compile` becomes False)."""
        import warnings

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        fn = self._step
        with torch.cuda.stream(stream):
            if self.compile:
                try:
                    fn = torch.compile(self._step, dynamic=False)
                    fn()
                except Exception as e:  # any compiler failure: run the step eagerly
                    msg = f"torch.compile of the decode step failed ({e!r}); eager step"
                    warnings.warn(msg, stacklevel=3)
                    self.compile, fn = False, self._step
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        return fn

    def cache(self):
        """The state as a Cache (sharing the static buffers)."""
        from models.torch.model import Cache

        return Cache(self.blocks, self.host_length)


class GraphedPrefill:
    """`model.prefill` replayed as a CUDA graph, one graph per input shape (the latest kept).

        prefill = GraphedPrefill(model, logits="last")
        logits, cache = prefill(tokens, segment_pos)    # as model.prefill(tokens, segment_pos, ...)

    An eager prefill at batch 1 issues ~1500 kernels (Triton launches among them, each tens of
    microseconds of Python), so the host, not the GPU, sets its time: on the H100 RG-2B's eager
    prefill measured 29 to 49 ms on different machines, about 25 ms of it GPU work in the
    profile. A replay issues all the kernels at once.
    Whether each row holds one document (attention's causal fast path) is decided on the host
    before each call and is part of the graph's key. On a CUDA device the first call of a shape
    runs the prefill twice on a side stream (compiling kernels, warming cuBLAS) and captures it;
    the results are copied out of the graph's buffers, so they stay valid after the next call. A
    shape that cannot be captured falls back to the eager prefill with a warning. Elsewhere (CPU)
    every call is the eager prefill.
    """

    def __init__(self, model, logits: str = "all"):
        self.model, self.logits = model, logits
        self.key, self.entry = None, None
        self.graphed = True  # False after a failed capture (then every call is eager)

    def _eager(self, tokens, segment_pos):
        return self.model.prefill(tokens, segment_pos, logits=self.logits)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, segment_pos: torch.Tensor):
        if not tokens.is_cuda or not self.graphed:
            return self._eager(tokens, segment_pos)
        one_doc = one_document(segment_pos)
        key = (tuple(tokens.shape), tuple(segment_pos.shape), one_doc)
        if key != self.key:
            self.key, self.entry = None, None  # free the old graph's memory first
            self.entry = self._capture(tokens, segment_pos, one_doc)
            if self.entry is None:
                return self._eager(tokens, segment_pos)
            self.key = key
        graph, tok, pos, (logits, cache) = self.entry
        tok.copy_(tokens)
        pos.copy_(segment_pos)
        graph.replay()
        return logits.clone(), copy_cache(cache)

    def _capture(self, tokens, segment_pos, one_doc: bool):
        import warnings

        tok, pos = tokens.clone(), segment_pos.clone()
        hint = _ONE_DOCUMENT.set(one_doc)  # no host sync inside the capture
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._eager(tok, pos)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._eager(tok, pos)
        except torch.cuda.OutOfMemoryError:
            raise  # the shape does not fit (a throughput search): not a reason to stop graphing
        except Exception as e:  # a kernel that cannot be captured: stay eager
            warnings.warn(f"CUDA-graph capture of prefill failed ({e!r}); eager", stacklevel=3)
            self.graphed = False
            return None
        finally:
            _ONE_DOCUMENT.reset(hint)
        return graph, tok, pos, out


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of cross-entropy(cap(x @ w.T), targets) / n, with its gradients computed
    chunk by chunk in the forward pass: no [n, vocab] logits kept, and none recomputed."""

    @staticmethod
    def forward(ctx, x, w, targets, cap: float, chunk: int):
        n = x.shape[0]
        dx = torch.empty_like(x)
        dw = torch.zeros_like(w)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        for i in range(0, n, chunk):
            xc, tc = x[i : i + chunk], targets[i : i + chunk]
            # the chunk's [chunk, vocab] logits in x's dtype are the one large buffer: the loss
            # kernel writes their gradient over them (kernels.cross_entropy)
            g = xc @ w.T
            loss += _xent_grad_(g, tc, cap, 1.0 / n).sum()
            dx[i : i + chunk] = g @ w
            dw.addmm_(g.T, xc)
        ctx.save_for_backward(dx, dw)
        return loss / n

    @staticmethod
    def backward(ctx, grad):
        dx, dw = ctx.saved_tensors
        return dx * grad.to(dx.dtype), dw * grad.to(dw.dtype), None, None, None


def chunked_loss(
    model, tokens, segment_pos, targets, chunk_tokens: int = 2048, *, checkpoint: bool = False
) -> torch.Tensor:
    """Mean float32 next-token cross-entropy without the [b, t, vocab] logits in memory: the
    output layer, the loss and their gradients run chunk by chunk of tokens in the forward pass
    (_LinearCrossEntropy), so the backward neither holds nor recomputes any logits (the output
    layer is the model's largest matmul: recomputing it, as activation checkpointing of the
    chunks did, cost a fourth GEMM of [b t, d] x [d, vocab]). Equals
    F.cross_entropy(model(tokens, segment_pos).float().flatten(0, 1), targets.flatten()).
    checkpoint: activation checkpointing of the blocks (Model.features)."""
    h = model.features(tokens, segment_pos, checkpoint=checkpoint).flatten(0, 1)
    normed = norm(model.final_norm, h)
    cap = float(model.config.logits_soft_cap or 0.0)
    w = model.embedder.input_embedding
    return _LinearCrossEntropy.apply(normed, w, targets.flatten(), cap, chunk_tokens)
