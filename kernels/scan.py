"""Diagonal linear recurrence `h_t = a_t * h_{t-1} + x_t` over [b, t, d] tensors.

    h, h_last = linear_scan(a, x, h0=None)       # Triton, forward and backward
    h, h_last = linear_scan_ref(a, x, h0=None)   # plain torch, the same function

The state is carried in float32 whatever the input dtype; h is returned in x.dtype, h_last in
float32. Inputs are [b, t, d] with d contiguous (no transposes for the caller).

Kernel layout: one program owns BLOCK_D channels of one batch row and walks the whole sequence in
tiles of BLOCK_T time steps. A tile is loaded at once (BLOCK_T x BLOCK_D loads in flight), scanned
along time with `tl.associative_scan`, and the last row carried into the next tile. Everything
about the recurrence stays in registers; the kernel reads a and x once and writes h once (6 bytes
per element in bf16), the minimum.

Two forward kernels walk that way:
- the packed forward (`_scan_fwd_packed_kernel`; 16-bit inputs with d even, the common case)
  reads PACK channels as one 32- or 64-bit word and keeps a thread's words whole, so the scan
  along time stays inside a thread (no shuffles); it loads the next tile into registers before
  scanning this one and asks L2 for the tile after that (`prefetch.global.L2`), which keeps enough
  bytes in flight at B*d = 20k channels (docs/h100.md);
- the general forward (`_scan_fwd_kernel`): any dtype and d.

Backward: with δ_t = dL/dh_t (all paths), δ_t = g_t + a_{t+1} δ_{t+1} is the same recurrence run
backwards in time; then dx_t = δ_t, da_t = δ_t h_{t-1}, dh0 = a_0 δ_0. The forward output h is
saved for h_{t-1} (in x.dtype: in bf16 that rounds the h used for da to bf16).
"""

from __future__ import annotations

import torch

from kernels._triton import INTERPRET, tl, triton

# (BLOCK_T, BLOCK_D, num_warps, CONTIG_D, NUM_STAGES): see docs/h100.md (kernels) for how they were chosen.
FWD_CONFIG = (128, 32, 1, True, 3)
# the packed forward, by words per channel block: (BLOCK_T, BLOCK_P words, num_warps, L2_TILES);
# the H100 sweep at efb15e5 (docs/h100.md): at B=8, D=2560, bf16, 4 channels a word
# reached 90% of copy at T=4096 and 96% at 16384, 2 a word 87% and 91%; L2_TILES 2 (64 steps
# ahead) beat 1, 3, 4, 6 and 8 at both lengths
FWD_PACKED_CONFIG = {4: (32, 32, 1, 2), 2: (32, 32, 1, 2)}
BWD_CONFIG = (32, 32, 1, True, 3)


def _check(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None) -> None:
    if x.ndim != 3 or a.shape != x.shape:
        raise ValueError(
            f"a and x must both be [b, t, d]; got a {list(a.shape)}, x {list(x.shape)}"
        )
    state = torch.float64 if x.dtype == torch.float64 else torch.float32
    if h0 is not None and (h0.shape != (x.shape[0], x.shape[2]) or h0.dtype != state):
        raise ValueError(
            f"h0 must be {state} [b, d] = {[x.shape[0], x.shape[2]]}; got {h0.dtype} {list(h0.shape)}"
        )


def linear_scan_ref(
    a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference scan: a loop over time in float32 (float64 stays float64).

    Args:
      a, x: [b, t, d], any float dtype.
      h0: float32 [b, d] or None (zeros).
    Returns:
      h: [b, t, d] in x.dtype; h_last: float32 [b, d] (float64 for float64 inputs).
    """
    _check(a, x, h0)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = torch.zeros_like(x[:, 0], dtype=acc) if h0 is None else h0.to(acc)
    out = []
    # unbind, not a[:, t]: the backward of one unbind is one stack, while each slice's backward
    # would fill a whole [b, t, d] gradient (quadratic in t)
    for a_t, x_t in zip(a.unbind(1), x.unbind(1), strict=True):
        h = a_t.to(acc) * h + x_t.to(acc)
        out.append(h.to(x.dtype))
    ys = torch.stack(out, dim=1) if out else x.new_empty(x.shape)
    return ys, h


@triton.jit
def _combine(a1, x1, a2, x2):
    # (a1, x1) then (a2, x2): h -> a2 (a1 h + x1) + x2
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _d_offsets(offs_d, stride_d, CONTIG_D: tl.constexpr):
    """Channel offsets. With CONTIG_D the compiler knows the stride is 1 and may vectorise the
    loads (several channels per thread); without it each thread keeps whole channels, so the
    scan along time stays within a thread (stride_d is not specialised on its value 1)."""
    if CONTIG_D:
        return offs_d
    else:
        return offs_d * stride_d


@triton.jit
def _last_row(tile, BLOCK_T: tl.constexpr):
    rows = tl.arange(0, BLOCK_T)[:, None]
    return tl.sum(tl.where(rows == BLOCK_T - 1, tile, 0.0), axis=0)


@triton.jit
def _first_row(tile, BLOCK_T: tl.constexpr):
    rows = tl.arange(0, BLOCK_T)[:, None]
    return tl.sum(tl.where(rows == 0, tile, 0.0), axis=0)


@triton.jit(do_not_specialize=["stride_d"])
def _scan_fwd_kernel(
    # pointers
    a_ptr, x_ptr, h_ptr, h0_ptr, hlast_ptr,
    # sizes
    T, D,
    # strides (a, x and h share them; h0 / h_last are [b, d] contiguous)
    stride_b, stride_t, stride_d,
    # meta-parameters
    HAS_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, CONTIG_D: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D + offs_d, mask=mask_d, other=0.0)
    else:
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t0 in tl.range(0, T, BLOCK_T, num_stages=NUM_STAGES):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask = (offs_t[:, None] < T) & mask_d[None, :]
        ptrs = base + offs_t[:, None].to(tl.int64) * stride_t
        # padding rows carry h through unchanged: a = 1, x = 0
        a = tl.load(a_ptr + ptrs, mask=mask, other=1.0).to(tl.float32)
        x = tl.load(x_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        a_cum, x_cum = tl.associative_scan((a, x), axis=0, combine_fn=_combine)
        hs = a_cum * h[None, :] + x_cum
        tl.store(h_ptr + ptrs, hs.to(h_ptr.dtype.element_ty), mask=mask)
        h = _last_row(hs, BLOCK_T)
    tl.store(hlast_ptr + pid_b * D + offs_d, h, mask=mask_d)


@triton.jit
def _unpack(v, k: tl.constexpr, PACK: tl.constexpr, IS_BF16: tl.constexpr):
    """Channel k of the PACK 16-bit floats in word v (int32 for 2, int64 for 4), as float32."""
    if PACK == 2:
        bits = (v.to(tl.uint32, bitcast=True) >> (16 * k)) & 0xFFFF
    else:
        bits = ((v.to(tl.uint64, bitcast=True) >> (16 * k)) & 0xFFFF).to(tl.uint32)
    if IS_BF16:
        return (bits << 16).to(tl.float32, bitcast=True)
    else:
        return bits.to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _bits16(h, IS_BF16: tl.constexpr):
    """float32 -> the bits of its bfloat16 / float16 rounding, as uint32."""
    if IS_BF16:
        return h.to(tl.bfloat16).to(tl.uint16, bitcast=True).to(tl.uint32)
    else:
        return h.to(tl.float16).to(tl.uint16, bitcast=True).to(tl.uint32)


@triton.jit
def _packed_channel(va, vx, h, k: tl.constexpr, PACK: tl.constexpr, IS_BF16: tl.constexpr,
                    BLOCK_T: tl.constexpr):  # fmt: skip
    """Channel k's states over one tile from the state h before it: the first row takes
    a_0 h + x_0, so the scan's x part is the state itself (its a part is never used)."""
    a = _unpack(va, k, PACK, IS_BF16)
    x = _unpack(vx, k, PACK, IS_BF16)
    rows = tl.arange(0, BLOCK_T)[:, None]
    x = tl.where(rows == 0, a * h[None, :] + x, x)
    _, hs = tl.associative_scan((a, x), axis=0, combine_fn=_combine)
    return hs


@triton.jit
def _packed_tile(va, vx, h0, h1, h2, h3, PACK: tl.constexpr, IS_BF16: tl.constexpr,
                 BLOCK_T: tl.constexpr):  # fmt: skip
    """One tile of words: (the output words, each channel's states). With PACK 2, h2 and h3
    are passed through unused."""
    hs0 = _packed_channel(va, vx, h0, 0, PACK, IS_BF16, BLOCK_T)
    hs1 = _packed_channel(va, vx, h1, 1, PACK, IS_BF16, BLOCK_T)
    word = _bits16(hs0, IS_BF16) | (_bits16(hs1, IS_BF16) << 16)
    if PACK == 4:
        hs2 = _packed_channel(va, vx, h2, 2, PACK, IS_BF16, BLOCK_T)
        hs3 = _packed_channel(va, vx, h3, 3, PACK, IS_BF16, BLOCK_T)
        high = _bits16(hs2, IS_BF16) | (_bits16(hs3, IS_BF16) << 16)
        out = (word.to(tl.uint64) | (high.to(tl.uint64) << 32)).to(tl.int64, bitcast=True)
    else:
        hs2 = hs0
        hs3 = hs1
        out = word.to(tl.int32, bitcast=True)
    return out, hs0, hs1, hs2, hs3


@triton.jit
def _row(tile, r, BLOCK_T: tl.constexpr):
    """Row r of a tile, r known only at run time (whole tiles take _last_row)."""
    rows = tl.arange(0, BLOCK_T)[:, None]
    return tl.sum(tl.where(rows == r, tile, 0.0), axis=0)


@triton.jit
def _prefetch_l2(ptrs):
    """Ask L2 for the bytes at ptrs (no register waits on them; a warp's row of words is one
    request). Not in the interpreter (PTX)."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n mov.u32 $0, 0;", "=r,l", [ptrs],
                              dtype=tl.int32, is_pure=False, pack=1)  # fmt: skip


@triton.jit
def _load_words(ptr, offs, mask, WHOLE: tl.constexpr):
    """Words at offs; masked (0 outside) unless WHOLE says every one is in range."""
    if WHOLE:
        return tl.load(ptr + offs)
    else:
        return tl.load(ptr + offs, mask=mask, other=0)


# the word pointers are not specialised on 16-byte alignment: the compiler then cannot vectorise
# along channels, so each thread keeps whole words and the scan along time stays inside it (with
# the alignment known it spreads a tile's rows over the threads and scans across them with
# shuffles: 3x the instructions, docs/h100.md)
@triton.jit(do_not_specialize=["a_ptr", "x_ptr", "h_ptr", "T"])
def _scan_fwd_packed_kernel(
    # pointers: a, x, h as [b, t, d / PACK] words of PACK channels (contiguous); h0 / h_last
    # [b, d] float32
    a_ptr, x_ptr, h_ptr, h0_ptr, hlast_ptr,
    # sizes
    T, D,
    # meta-parameters: STRIDE_T = d / PACK (a constant, so that a thread's words of one tile sit
    # at constant offsets from one address)
    STRIDE_T: tl.constexpr, HAS_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
    PACK: tl.constexpr, IS_BF16: tl.constexpr, EVEN_D: tl.constexpr, L2_TILES: tl.constexpr,
):  # fmt: skip
    pid_p, pid_b = tl.program_id(0), tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < D // PACK
    dmask = mask_p[None, :]
    rows = tl.arange(0, BLOCK_T)[:, None]
    if HAS_H0:
        h0p = h0_ptr + pid_b * D + offs_p * PACK
        h0 = tl.load(h0p, mask=mask_p, other=0.0)
        h1 = tl.load(h0p + 1, mask=mask_p, other=0.0)
        if PACK == 4:
            h2 = tl.load(h0p + 2, mask=mask_p, other=0.0)
            h3 = tl.load(h0p + 3, mask=mask_p, other=0.0)
        else:
            h2 = h0
            h3 = h1
    else:
        h0 = tl.zeros([BLOCK_P], dtype=tl.float32)
        h1 = h0
        h2 = h0
        h3 = h0
    n_full = T // BLOCK_T
    step = BLOCK_T * STRIDE_T
    tile = pid_b.to(tl.int64) * T * STRIDE_T + offs_p[None, :] + rows * STRIDE_T
    va = _load_words(a_ptr, tile, dmask, EVEN_D)
    vx = _load_words(x_ptr, tile, dmask, EVEN_D)
    for i in range(0, n_full):  # whole tiles
        # the next whole tile's loads go out before this tile's scan (the last whole tile
        # reloads itself: the tile after it may not exist)
        nxt = tile + tl.where(i + 1 < n_full, step, 0)
        if L2_TILES > 0:  # and the tile L2_TILES ahead into L2 (clamped to the last whole tile)
            far = tile + tl.minimum(L2_TILES, n_full - 1 - i) * step
            _prefetch_l2(a_ptr + far)
            _prefetch_l2(x_ptr + far)
        va_next = _load_words(a_ptr, nxt, dmask, EVEN_D)
        vx_next = _load_words(x_ptr, nxt, dmask, EVEN_D)
        out, hs0, hs1, hs2, hs3 = _packed_tile(va, vx, h0, h1, h2, h3, PACK, IS_BF16, BLOCK_T)
        if EVEN_D:
            tl.store(h_ptr + tile, out)
        else:
            tl.store(h_ptr + tile, out, mask=dmask)
        h0 = _last_row(hs0, BLOCK_T)
        h1 = _last_row(hs1, BLOCK_T)
        h2 = _last_row(hs2, BLOCK_T)
        h3 = _last_row(hs3, BLOCK_T)
        va = va_next
        vx = vx_next
        tile = tile + step
    t0 = n_full * BLOCK_T
    if t0 < T:  # the last, partial tile
        mask = (t0 + rows < T) & dmask
        va = _load_words(a_ptr, tile, mask, False)
        vx = _load_words(x_ptr, tile, mask, False)
        out, hs0, hs1, hs2, hs3 = _packed_tile(va, vx, h0, h1, h2, h3, PACK, IS_BF16, BLOCK_T)
        tl.store(h_ptr + tile, out, mask=mask)
        h0 = _row(hs0, T - 1 - t0, BLOCK_T)
        h1 = _row(hs1, T - 1 - t0, BLOCK_T)
        h2 = _row(hs2, T - 1 - t0, BLOCK_T)
        h3 = _row(hs3, T - 1 - t0, BLOCK_T)
    hl = hlast_ptr + pid_b * D + offs_p * PACK
    tl.store(hl, h0, mask=mask_p)
    tl.store(hl + 1, h1, mask=mask_p)
    if PACK == 4:
        tl.store(hl + 2, h2, mask=mask_p)
        tl.store(hl + 3, h3, mask=mask_p)


@triton.jit(do_not_specialize=["stride_d"])
def _scan_bwd_kernel(
    # pointers
    a_ptr, h_ptr, h0_ptr, dh_ptr, dhlast_ptr, da_ptr, dx_ptr, dh0_ptr,
    # sizes
    T, D,
    # strides (a, h, dh, da, dx share them)
    stride_b, stride_t, stride_d,
    # meta-parameters
    HAS_H0: tl.constexpr, HAS_DHLAST: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    CONTIG_D: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):  # fmt: skip
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D)[None, :]
    if HAS_DHLAST:
        delta = tl.load(dhlast_ptr + pid_b * D + offs_d, mask=mask_d, other=0.0)
    else:
        delta = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_H0:
        h0 = tl.load(h0_ptr + pid_b * D + offs_d, mask=mask_d, other=0.0)
    else:
        h0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    n_tiles = tl.cdiv(T, BLOCK_T)
    for i in tl.range(0, n_tiles, num_stages=NUM_STAGES):
        t0 = (n_tiles - 1 - i) * BLOCK_T
        offs_t = t0 + tl.arange(0, BLOCK_T)
        valid = offs_t[:, None] < T
        mask = valid & mask_d[None, :]
        ptrs = base + offs_t[:, None].to(tl.int64) * stride_t
        # δ_t = g_t + c_t δ_{t+1} with c_t = a_{t+1}; the last step and padding rows pass the
        # carry (dh_last, then δ of the next tile) through: c = 1, g = 0 on padding.
        next_mask = (offs_t[:, None] + 1 < T) & mask_d[None, :]
        c = tl.load(a_ptr + ptrs + stride_t, mask=next_mask, other=1.0).to(tl.float32)
        g = tl.load(dh_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        c_cum, g_cum = tl.associative_scan((c, g), axis=0, combine_fn=_combine, reverse=True)
        deltas = c_cum * delta[None, :] + g_cum
        prev_mask = (offs_t[:, None] >= 1) & mask
        h_prev = tl.load(h_ptr + ptrs - stride_t, mask=prev_mask, other=0.0).to(tl.float32)
        h_prev = tl.where(offs_t[:, None] == 0, h0[None, :], h_prev)
        tl.store(dx_ptr + ptrs, deltas.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(da_ptr + ptrs, (deltas * h_prev).to(da_ptr.dtype.element_ty), mask=mask)
        delta = _first_row(deltas, BLOCK_T)
    if HAS_H0:  # dh0 = a_0 δ_0
        a_first = tl.load(a_ptr + pid_b.to(tl.int64) * stride_b + _d_offsets(offs_d, stride_d, CONTIG_D),
                          mask=mask_d, other=0.0).to(tl.float32)  # fmt: skip
        tl.store(dh0_ptr + pid_b * D + offs_d, a_first * delta, mask=mask_d)


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def packing(x: torch.Tensor) -> int:
    """Channels per word of the packed forward for x (4 or 2), or 0 where it does not apply:
    16-bit floats, contiguous, d even, the data aligned to the word."""
    if x.dtype not in (torch.bfloat16, torch.float16) or not x.is_contiguous():
        return 0
    for pack in (4, 2):
        if x.shape[-1] % pack == 0 and x.data_ptr() % (2 * pack) == 0:
            return pack
    return 0


def _forward(a, x, h0):
    """The forward pass: packed where it applies (a and x alike), else the general kernel."""
    pack = min(packing(a), packing(x))
    if pack:
        return _forward_packed(a, x, h0, FWD_PACKED_CONFIG[pack] + (pack,))
    return _forward_walking(a, x, h0, FWD_CONFIG)


def _forward_packed(a, x, h0, config):
    """The packed forward (`_scan_fwd_packed_kernel`); config (BLOCK_T, BLOCK_P words,
    num_warps, L2_TILES, PACK). The L2 prefetch is PTX: off in the interpreter."""
    b, t, d = x.shape
    block_t, block_p, warps, l2_tiles, pack = config
    word = {2: torch.int32, 4: torch.int64}[pack]
    h = torch.empty_like(x)
    h_last = torch.empty(b, d, device=x.device, dtype=torch.float32)
    dp = d // pack
    _scan_fwd_packed_kernel[(triton.cdiv(dp, block_p), b)](
        a.view(word), x.view(word), h.view(word), h0 if h0 is not None else h_last, h_last, t, d,
        STRIDE_T=dp, HAS_H0=h0 is not None, BLOCK_T=block_t, BLOCK_P=block_p, PACK=pack,
        IS_BF16=x.dtype == torch.bfloat16, EVEN_D=dp % block_p == 0,
        L2_TILES=0 if INTERPRET else l2_tiles, num_warps=warps,
    )  # fmt: skip
    return h, h_last


def _forward_walking(a, x, h0, config=FWD_CONFIG):
    """The general forward (`_scan_fwd_kernel`): any float dtype and d."""
    b, t, d = x.shape
    block_t, block_d, warps, contig, stages = config
    h = torch.empty_like(x)
    h_last = torch.empty(b, d, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(d, block_d), b)
    _scan_fwd_kernel[grid](
        a, x, h, h0 if h0 is not None else h_last, h_last,
        t, d, *_strides(x),
        HAS_H0=h0 is not None, BLOCK_T=block_t, BLOCK_D=block_d, CONTIG_D=contig, NUM_STAGES=stages, num_warps=warps,
    )  # fmt: skip
    return h, h_last


def _backward(a, h, h0, dh, dh_last, config=BWD_CONFIG):
    b, t, d = h.shape
    block_t, block_d, warps, contig, stages = config
    da, dx = torch.empty_like(a), torch.empty_like(h)
    dh0 = torch.empty(b, d, device=h.device, dtype=torch.float32) if h0 is not None else None
    grid = (triton.cdiv(d, block_d), b)
    _scan_bwd_kernel[grid](
        a, h, h0 if h0 is not None else da, dh, dh_last if dh_last is not None else da,
        da, dx, dh0 if dh0 is not None else da,
        t, d, *_strides(h),
        HAS_H0=h0 is not None, HAS_DHLAST=dh_last is not None,
        BLOCK_T=block_t, BLOCK_D=block_d, CONTIG_D=contig, NUM_STAGES=stages, num_warps=warps,
    )  # fmt: skip
    return da, dx, dh0


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, x, h0):
        h, h_last = _forward(a, x, h0)
        ctx.save_for_backward(a, h, h0)
        return h, h_last

    @staticmethod
    def backward(ctx, dh, dh_last):
        a, h, h0 = ctx.saved_tensors
        dh = torch.zeros_like(h) if dh is None else dh.contiguous()
        da, dx, dh0 = _backward(a, h, h0, dh, dh_last)
        return da, dx, dh0


def linear_scan(
    a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`h_t = a_t h_{t-1} + x_t` with a Triton kernel (forward and backward).

    Args:
      a, x: [b, t, d] in float32, bfloat16 or float16 (the same dtype), on a GPU (or the CPU
        under TRITON_INTERPRET=1).
      h0: float32 [b, d] or None.
    Returns:
      h: [b, t, d] in x.dtype; h_last: float32 [b, d]. Differentiable in a, x and h0.
    """
    _check(a, x, h0)
    if a.dtype != x.dtype or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(
            f"a and x must share one dtype of float32, bfloat16, float16; got {a.dtype}, {x.dtype}"
        )
    if x.shape[1] == 0:
        raise ValueError("linear_scan needs at least one time step")
    a, x = a.contiguous(), x.contiguous()
    h0 = None if h0 is None else h0.contiguous()
    return _LinearScan.apply(a, x, h0)
