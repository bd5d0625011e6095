"""Multi-query attention for a decode step: one query token per row, one shared key/value head.

    out = mqa_decode(q, k, v, mask)        # q [b, n, h]; k, v [b, s, h]; mask bool [b, s]
    out = mqa_decode_ref(q, k, v, mask)    # plain torch, float32 math
    out = mqa_decode(q, k, v, mask, new=(k_new, v_new, slot))  # first k[:, slot] = k_new, ...

    out = mqa_decode(q, k, v, mask, new=..., rope=(positions, rope_dims, base))  # q, k_new raw

`new`: the step's own key and value ([b, h] each) and its cache slot (an int64 tensor of one
element, on the device, so a CUDA graph can replay the step): they are written into k and v in
place, by the program that reads that slot (which uses them from its registers), instead of by
two copy kernels before the attention. `rope` (with `new`): q and k_new come before their
rotary embedding, which the kernel applies (`rope_ref`: rotate-half on the first rope_dims
channels of each head, at positions [b], the rows' segment positions) instead of two kernels
before it; the rotated key is what goes into the cache. `filled` (with `new`): the slots past
`slot` are empty (a global cache filled in order, token i in slot i, with room reserved for a
whole generation): they are masked anyway, and the kernel does not read them.

A decode step's attention reads the whole key/value cache (s slots of h values, twice) for one
query per head. PyTorch's SDPA pads that single query to a 128-row tile of a prefill kernel and
runs one tile per (row, head): at RecurrentGemma-2B shape on an H100 cuDNN's kernel took 15.6 us a
layer at batch 1 and 147 us at batch 16, where the cache's bytes take ~1 us and ~11 us to read
(H100 profile at 7575a94, docs/h100.md). Here the n query heads, which share the key/value
head, are the rows of one tile (n <= 16 padded to 16), and the slots are split across programs
(flash-decoding): each program reads its slots' keys and values once, keeps a running softmax
for all heads, and writes its partial sum; a second kernel combines the splits.

Masked slots (mask False: outside the window, another document, an empty ring-buffer slot) get
no weight. Every row must have at least one unmasked slot (a decode step always sees its own
token). Math in float32 (the probabilities enter the value product in the inputs' dtype, as in
flash attention); output in q's dtype.
"""

from __future__ import annotations

import functools
import math

import torch

from kernels._triton import INTERPRET, tl, triton


def _check_new(k, new):
    if new is None:
        return
    k_new, v_new, slot = new
    b, _, h = k.shape
    if k_new.shape != (b, h) or v_new.shape != (b, h):
        raise ValueError(
            f"the new key and value must be [{b}, {h}]; got {list(k_new.shape)}, "
            f"{list(v_new.shape)}"
        )
    if k_new.dtype != k.dtype or v_new.dtype != k.dtype:
        raise ValueError(f"the new key and value must be {k.dtype} like the cache")
    if slot.numel() != 1 or slot.dtype != torch.int64:
        raise ValueError(f"slot must be one int64 element, got {slot.dtype} {list(slot.shape)}")


def _check(q, k, v, mask):
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(
            f"q must be [b, n, h] and k, v [b, s, h]; got {list(q.shape)}, {list(k.shape)}"
        )
    b, n, h = q.shape
    if k.shape[0] != b or k.shape[2] != h or v.shape != k.shape:
        raise ValueError(
            f"k and v must be [{b}, s, {h}] (one shared head); got {list(k.shape)}, {list(v.shape)}"
        )
    if mask.shape != k.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be bool [{b}, {k.shape[1]}], got {mask.dtype} {list(mask.shape)}"
        )
    if n > 16:
        raise ValueError(f"at most 16 query heads share a key head here, got {n}")


def rope_ref(x, positions, rope_dims: int, base: float):
    """x [b, ..., h] rotated at positions [b] (models.torch.layers.apply_rope's formula: the
    rotate-half layout on the first rope_dims channels, the angles in float32; here the
    products in float32 too, rounded to x's dtype once)."""
    freq = torch.arange(rope_dims // 2, device=x.device)
    inv = 1.0 / (base ** (2 * freq / rope_dims))
    ang = positions.view(-1, *([1] * (x.dim() - 1))) * inv  # [b, 1.., rope_dims / 2]
    sin, cos = torch.sin(ang), torch.cos(ang)
    xf = x.float()
    x1, x2, rest = (
        xf[..., : rope_dims // 2],
        xf[..., rope_dims // 2 : rope_dims],
        xf[..., rope_dims:],
    )
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1).to(x.dtype)


def _check_rope(q, new, rope):
    if rope is None:
        return
    if new is None:
        raise ValueError("rope needs new=(k_new, v_new, slot): the kernel rotates q and k_new")
    positions, dims, _ = rope
    if positions.shape != (q.shape[0],) or positions.dtype != torch.int64:
        raise ValueError(f"rope positions must be int64 [{q.shape[0]}], got {positions.dtype} "
                         f"{list(positions.shape)}")  # fmt: skip
    if not (0 < dims <= q.shape[-1] and dims % 2 == 0):
        raise ValueError(f"rope_dims must be even and in (0, {q.shape[-1]}], got {dims}")


def mqa_decode_ref(q, k, v, mask, scale: float | None = None, new=None, rope=None):
    """softmax over the unmasked slots of (q . k) * scale, times v; scale defaults to h**-0.5.
    new = (k_new, v_new, slot): k[:, slot] = k_new and v[:, slot] = v_new first (in place).
    rope = (positions, rope_dims, base): q and k_new rotated first (rope_ref)."""
    _check(q, k, v, mask)
    _check_new(k, new)
    _check_rope(q, new, rope)
    if rope is not None:
        q = rope_ref(q, *rope)
        new = (rope_ref(new[0], *rope), new[1], new[2])
    if new is not None:
        k.index_copy_(1, new[2].view(1), new[0][:, None])
        v.index_copy_(1, new[2].view(1), new[1][:, None])
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("bnh,bsh->bns", q.float(), k.float()) * scale
    s = s.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.einsum("bns,bsh->bnh", torch.softmax(s, dim=-1), v.float()).to(q.dtype)


@triton.jit
def _rope_tables(pos_ptr, b, hs, R, log2_base):
    """cos, sin, the partner channel and its sign for the rotate-half RoPE of one row: channel
    c < R/2 pairs with c + R/2 (-sin), R/2 <= c < R with c - R/2 (+sin), c >= R passes."""
    p = tl.load(pos_ptr + b).to(tl.float32)
    half = R // 2
    f = tl.where(hs < half, hs, hs - half).to(tl.float32)
    ang = p * tl.exp2(-(2.0 * f / R) * log2_base)
    rot = hs < R
    cos = tl.where(rot, tl.cos(ang), 1.0)
    sin = tl.where(rot, tl.sin(ang), 0.0)
    partner = tl.where(hs < half, hs + half, tl.where(rot, hs - half, hs))
    sign = tl.where(hs < half, -1.0, 1.0)
    return cos, sin, partner, sign


@triton.jit
def _split_kernel(q_ptr, k_ptr, v_ptr, m_ptr, acc_ptr, ml_ptr, kn_ptr, vn_ptr, slot_ptr,
                  pos_ptr, R, log2_base,
                  N, S, H, chunk, scale, sqb, skb, sks, svb, svs, smb, SPLITS,
                  BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr,
                  PREC: tl.constexpr, UPCAST: tl.constexpr, NEW: tl.constexpr,
                  ROPE: tl.constexpr, FILLED: tl.constexpr):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    sp = tl.program_id(1)
    ns = tl.arange(0, BLOCK_N)
    hs = tl.arange(0, BLOCK_H)
    nmask, hmask = ns < N, hs < H
    qmask = nmask[:, None] & hmask[None, :]
    q = tl.load(q_ptr + b * sqb + ns[:, None] * H + hs[None, :], mask=qmask, other=0.0)
    if ROPE:  # rotate q (and below k_new) here, in float32, rounded to the inputs' dtype once
        cos, sin, partner, sign = _rope_tables(pos_ptr, b, hs, R, log2_base)
        qp = tl.load(q_ptr + b * sqb + ns[:, None] * H + partner[None, :], mask=qmask, other=0.0)
        q = (q.to(tl.float32) * cos[None, :] + sign[None, :] * qp.to(tl.float32) * sin[None, :]
             ).to(q_ptr.dtype.element_ty)  # fmt: skip
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_N], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_N], tl.float32)
    acc = tl.zeros([BLOCK_N, BLOCK_H], tl.float32)
    start = sp * chunk
    end = tl.minimum(start + chunk, S)
    if NEW:  # the step's own key and value: kept in registers, written at their slot
        slot = tl.load(slot_ptr)
        k_new = tl.load(kn_ptr + b * H + hs, mask=hmask, other=0.0)
        v_new = tl.load(vn_ptr + b * H + hs, mask=hmask, other=0.0)
        if ROPE:
            kp = tl.load(kn_ptr + b * H + partner, mask=hmask, other=0.0)
            k_new = (k_new.to(tl.float32) * cos + sign * kp.to(tl.float32) * sin).to(
                kn_ptr.dtype.element_ty
            )
        slots = tl.zeros([BLOCK_H], tl.int64) + slot
        mine = hmask & (slots >= start) & (slots < end)
        tl.store(k_ptr + b * skb + slots * sks + hs, k_new, mask=mine)
        tl.store(v_ptr + b * svb + slots * svs + hs, v_new, mask=mine)
        if FILLED:  # nothing but empty slots past the new one: a split there reads nothing
            end = tl.minimum(end, slot.to(tl.int32) + 1)
    for s0 in range(start, end, BLOCK_S):
        ss = s0 + tl.arange(0, BLOCK_S)
        valid = ss < end
        keep = (tl.load(m_ptr + b * smb + ss, mask=valid, other=0) != 0) & valid
        kt = tl.load(k_ptr + b * skb + ss[:, None] * sks + hs[None, :],
                     mask=valid[:, None] & hmask[None, :], other=0.0)  # fmt: skip
        # the values' load is issued with the keys' (not after the scores): both in flight at once
        vt = tl.load(v_ptr + b * svb + ss[:, None] * svs + hs[None, :],
                     mask=valid[:, None] & hmask[None, :], other=0.0)  # fmt: skip
        if NEW:
            at = (ss == slot)[:, None]
            kt = tl.where(at, k_new[None, :], kt)
            vt = tl.where(at, v_new[None, :], vt)
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        sc = tl.dot(q, tl.trans(kt), input_precision=PREC) * scale
        sc = tl.where(keep[None, :], sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing seen yet: no scaling
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(sc - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PREC)
        m_i = m_new
    part = b * SPLITS + sp
    tl.store(acc_ptr + (part * BLOCK_N + ns[:, None]) * BLOCK_H + hs[None, :], acc)
    tl.store(ml_ptr + (part * 2) * BLOCK_N + ns, m_i)
    tl.store(ml_ptr + (part * 2 + 1) * BLOCK_N + ns, l_i)


@triton.jit
def _combine_kernel(acc_ptr, ml_ptr, o_ptr, N, H, SPLITS,
                    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HC: tl.constexpr,
                    BLOCK_SPLITS: tl.constexpr, COMBINE: tl.constexpr):  # fmt: skip
    # one program per (row, head, BLOCK_HC channels); the splits' partial sums COMBINE at a time
    # ([COMBINE, BLOCK_HC] tiles: a group's loads in flight together; one group up to 128 splits)
    b = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1)
    hs = tl.program_id(2) * BLOCK_HC + tl.arange(0, BLOCK_HC)
    sps = tl.arange(0, BLOCK_SPLITS)
    ms = tl.load(ml_ptr + ((b * SPLITS + sps) * 2) * BLOCK_N + n, mask=sps < SPLITS,
                 other=float("-inf"))  # fmt: skip
    big = tl.max(ms, 0)
    out = tl.zeros([BLOCK_HC], tl.float32)
    den = tl.zeros([COMBINE], tl.float32)
    for c in range(0, SPLITS, COMBINE):
        cs = c + tl.arange(0, COMBINE)
        part = b * SPLITS + cs
        m = tl.load(ml_ptr + (part * 2) * BLOCK_N + n, mask=cs < SPLITS, other=float("-inf"))
        w = tl.where(m == float("-inf"), 0.0, tl.exp(m - big))  # a split that saw no slot
        den += w * tl.load(ml_ptr + (part * 2 + 1) * BLOCK_N + n, mask=cs < SPLITS, other=0.0)
        a = tl.load(acc_ptr + (part[:, None] * BLOCK_N + n) * BLOCK_H + hs[None, :],
                    mask=(cs < SPLITS)[:, None], other=0.0)  # fmt: skip
        out += tl.sum(w[:, None] * a, 0)
    out = out / tl.sum(den, 0)
    tl.store(o_ptr + (b * N + n) * H + hs, out.to(o_ptr.dtype.element_ty), mask=hs < H)


# The combine: a program per (row, head, COMBINE_CHANNELS channels), adding COMBINE_SPLITS
# splits' partials a load. (One program per (row, head), 16 splits a load, left 124 SMs idle at
# batch 1 while 8 programs walked 66 KB of partials each: 7.4 us a layer in the H100 profile;
# with these, split + combine at batch 1 went 11.9 -> 6.7 us and Gemma-2B's step 2.318 -> 2.224
# ms on the H100, docs/h100.md.) The tests lower both to cross their bounds.
COMBINE_CHANNELS = 64
COMBINE_SPLITS = 128


def _plan(b: int, s: int, sms: int) -> tuple[int, int, int]:
    """(slots per block, splits, slots per split): about two programs per SM over the batch,
    whole blocks each; 32-slot blocks when 64-slot ones would leave SMs idle (batch 1: 65
    programs reading 32 KB each over a 2049-slot ring, not 33 reading 64 KB)."""
    block = 32 if b * triton.cdiv(s, 64) < sms else 64
    blocks = triton.cdiv(s, block)
    per = triton.cdiv(blocks, max(1, min(blocks, triton.cdiv(2 * sms, b))))
    return block, triton.cdiv(blocks, per), per * block


@functools.cache
def _sm_count(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8  # the interpreter: a few splits, so the tests cross split boundaries


def mqa_decode(q, k, v, mask, scale: float | None = None, new=None, rope=None, filled=False):
    """mqa_decode_ref's result (and its writes, with `new`) from two Triton launches: the split
    pass and the combine. `filled` (with `new`): slots past the new one are empty, not read."""
    if filled and new is None:
        raise ValueError("filled needs new=(k_new, v_new, slot): the slot bounds the filled part")
    _check(q, k, v, mask)
    _check_new(k, new)
    _check_rope(q, new, rope)
    if q.dtype != k.dtype or v.dtype != k.dtype:
        raise ValueError(f"q, k and v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.stride(2) != 1 or v.stride(2) != 1:
        raise ValueError("k and v must be contiguous in their last dimension")
    b, n, h = q.shape
    s = k.shape[1]
    q = q.contiguous()
    mask = mask.contiguous().view(torch.uint8)
    scale = h**-0.5 if scale is None else scale
    bn, bh = 16, max(16, triton.next_power_of_2(h))  # tl.dot needs K >= 16 on a GPU
    block, splits, chunk = _plan(b, s, _sm_count(q.device))
    acc = torch.empty(b * splits * bn * bh, dtype=torch.float32, device=q.device)
    ml = torch.empty(b * splits * 2 * bn, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    # Triton's interpreter (the CPU tests) multiplies bfloat16/float16 tiles in tl.dot as their
    # raw bits (triton 3.9: a 16x16 bf16 product came out ~1e10); there the tiles are widened
    # to float32 first (UPCAST). On a GPU the dots take the inputs' dtype, as flash attention's.
    prec = "ieee" if q.dtype == torch.float32 or INTERPRET else "tf32"
    if new is not None:
        k_new, v_new, slot = new[0].contiguous(), new[1].contiguous(), new[2]
    else:
        k_new = v_new = slot = q  # unused
    if rope is not None:
        positions, rope_dims, log2_base = rope[0].contiguous(), int(rope[1]), math.log2(rope[2])
    else:
        positions, rope_dims, log2_base = q, 0, 0.0  # unused
    _split_kernel[(b, splits)](
        q, k, v, mask, acc, ml, k_new, v_new, slot, positions, rope_dims, log2_base,
        n, s, h, chunk, float(scale),
        q.stride(0), k.stride(0), k.stride(1), v.stride(0), v.stride(1), mask.stride(0), splits,
        BLOCK_N=bn, BLOCK_S=block, BLOCK_H=bh, PREC=prec, UPCAST=INTERPRET, NEW=new is not None,
        ROPE=rope is not None, FILLED=filled,
        num_warps=4,
        num_stages=2,  # at most two 64 x 256 key + value tiles in flight: 128 KB of shared memory
    )  # fmt: skip
    bsp = triton.next_power_of_2(splits)
    bhc = min(bh, COMBINE_CHANNELS)
    _combine_kernel[(b, n, triton.cdiv(h, bhc))](
        acc, ml, out, n, h, splits, BLOCK_N=bn, BLOCK_H=bh, BLOCK_HC=bhc,
        BLOCK_SPLITS=bsp, COMBINE=min(bsp, COMBINE_SPLITS), num_warps=4,
    )  # fmt: skip
    return out


# As a torch operator, so a torch.compile'd decode step (models.torch.optimized.StaticDecoder)
# keeps it as one call between the kernels Inductor generates (decode only: no backward).
@torch.library.custom_op("griffin_bench::mqa_decode_write", mutates_args=("k", "v"))
def mqa_decode_write_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    slot: torch.Tensor,
    positions: torch.Tensor | None = None,
    rope_dims: int = 0,
    rope_base: float = 10000.0,
    filled: bool = False,
) -> torch.Tensor:
    rope = None if positions is None else (positions, rope_dims, rope_base)
    return mqa_decode(q, k, v, mask, scale, new=(k_new, v_new, slot), rope=rope, filled=filled)


@mqa_decode_write_op.register_fake
def _(q, k, v, mask, scale, k_new, v_new, slot, positions=None, rope_dims=0, rope_base=1e4,
      filled=False):  # fmt: skip
    return torch.empty_like(q)
