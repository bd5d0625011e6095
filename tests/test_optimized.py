"""impl="optimized" (Triton kernels, fused attention, in-place decode) equals impl="reference" on
the same weights: forward, prefill + decode past the window and across document resets, and the
gradients of a training step. Float32, tiny presets; the kernels run in Triton's interpreter
where there is no GPU."""

import copy

import pytest
import torch
from util import inputs, randomize_zeros_, rel_err

from models.config import preset
from models.torch import Model
from models.torch.optimized import GraphedPrefill, StaticDecoder, chunked_loss, copy_cache

CASES = {
    "hawk-tiny": preset("hawk-tiny"),
    "griffin-tiny": preset("griffin-tiny"),
    "mqa-tiny": preset("mqa-tiny"),  # global attention: the cache grows while decoding
    "recurrentgemma-tiny": preset("recurrentgemma-tiny"),
    "gemma-tiny": preset("gemma-tiny"),
}
TOL = 1e-4
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU runs the Triton interpreter
T = 28  # past every tiny window (8)
RESETS = {0: [6, 19], 1: [11]}  # row 0: in the prompt and inside decoding; row 1: first decoded


def pair(cfg):
    ref = Model(cfg, device=DEVICE).eval()
    randomize_zeros_(ref, std=0.2)
    opt = copy.deepcopy(ref).use_impl("optimized")
    return ref, opt


def data(*args, **kw):
    return tuple(x.to(DEVICE) for x in inputs(*args, **kw))


@pytest.mark.parametrize("name", CASES)
def test_forward_equals_reference(name):
    ref, opt = pair(CASES[name])
    tokens, pos = data(3, T, CASES[name].vocab_size, RESETS)
    with torch.no_grad():
        assert rel_err(opt(tokens, pos), ref(tokens, pos)) <= TOL


@pytest.mark.parametrize("name", CASES)
def test_prefill_then_decode_equals_reference_forward(name):
    ref, opt = pair(CASES[name])
    prompt = 11
    tokens, pos = data(3, T, CASES[name].vocab_size, RESETS, seed=1)
    with torch.no_grad():
        full = ref(tokens, pos)
        logits, cache = opt.prefill(tokens[:, :prompt], pos[:, :prompt])
        assert rel_err(logits, full[:, :prompt]) <= TOL
        for t in range(prompt, T):
            logits, cache = opt.decode(tokens[:, t : t + 1], pos[:, t : t + 1], cache)
            assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"
    assert cache.length == T


def test_decode_updates_the_cache_in_place_and_a_copy_replays():
    _, opt = pair(CASES["griffin-tiny"])
    tokens, pos = data(2, 12, 256)
    with torch.no_grad():
        _, cache = opt.prefill(tokens[:, :11], pos[:, :11])
        keep = copy_cache(cache)
        first, after = opt.decode(tokens[:, 11:], pos[:, 11:], cache)
        assert torch.equal(after.blocks[0].rg_lru, cache.blocks[0].rg_lru)  # the same tensors
        assert not torch.equal(keep.blocks[0].rg_lru, cache.blocks[0].rg_lru)
        again, _ = opt.decode(tokens[:, 11:], pos[:, 11:], keep)
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", ["griffin-tiny", "mqa-tiny"])
def test_training_gradients_equal_reference(name):
    ref, opt = pair(CASES[name])
    ref.train(), opt.train()
    tokens, pos = data(2, 20, CASES[name].vocab_size, {0: [9]}, seed=2)
    targets = torch.roll(tokens, -1, dims=1)
    for m in (ref, opt):
        loss = torch.nn.functional.cross_entropy(m(tokens, pos).flatten(0, 1), targets.flatten())
        loss.backward()
    grads = dict(opt.named_parameters())
    for k, p in ref.named_parameters():
        assert p.grad is not None and grads[k].grad is not None, k
        assert rel_err(grads[k].grad, p.grad) <= TOL, k


@pytest.mark.parametrize(
    "name, t, resets, causal",
    [
        ("griffin-tiny", 9, None, True),  # t - 1 <= window (8), one document: plain causal
        ("griffin-tiny", 10, None, False),  # the window cuts: explicit mask
        ("griffin-tiny", 9, {1: [4]}, False),  # a document starts inside: explicit mask
        ("mqa-tiny", T, None, True),  # global attention, one document
    ],
)
def test_plain_causal_fast_path_equals_reference(name, t, resets, causal, monkeypatch):
    from models.torch import optimized

    seen, asked = [], []
    sdpa, ask = optimized._sdpa_mqa, optimized.one_document
    monkeypatch.setattr(
        optimized,
        "_sdpa_mqa",
        lambda q, k, v, mask: seen.append(mask is None) or sdpa(q, k, v, mask),
    )
    monkeypatch.setattr(optimized, "one_document", lambda pos: asked.append(1) or ask(pos))
    ref, opt = pair(CASES[name])
    ref.train(), opt.train()
    tokens, pos = data(2, t, CASES[name].vocab_size, resets, seed=3)
    targets = torch.roll(tokens, -1, dims=1)
    for m in (ref, opt):
        loss = torch.nn.functional.cross_entropy(m(tokens, pos).flatten(0, 1), targets.flatten())
        loss.backward()
    assert seen and set(seen) == {causal}
    grads = dict(opt.named_parameters())
    for k, p in ref.named_parameters():
        assert rel_err(grads[k].grad, p.grad) <= TOL, k
    with torch.no_grad():
        assert rel_err(opt(tokens, pos), ref(tokens, pos)) <= TOL
    assert len(asked) == 2  # once per forward of the optimized model (one host sync), not per layer


@pytest.mark.parametrize("name", ["griffin-tiny", "mqa-tiny"])
def test_graphed_prefill_equals_prefill(name):
    """GraphedPrefill (a CUDA-graph replay on a GPU, eager elsewhere) = model.prefill: replays of
    one shape with new data, a second graph for rows with document starts, results that stay
    valid after the next call."""
    _, opt = pair(CASES[name])
    prefill = GraphedPrefill(opt, logits="last")
    vocab = CASES[name].vocab_size
    results = []
    for seed, resets in ((1, None), (2, None), (3, RESETS), (4, None)):
        tokens, pos = data(3, 12, vocab, resets and {0: [6]}, seed=seed)
        logits, cache = prefill(tokens, pos)
        with torch.no_grad():
            want, want_cache = opt.prefill(tokens, pos, logits="last")
        assert rel_err(logits, want) <= TOL, seed
        for got_c, want_c in zip(cache.blocks, want_cache.blocks, strict=True):
            for f in want_c.__dataclass_fields__:
                got_t, want_t = getattr(got_c, f), getattr(want_c, f)
                if want_t.is_floating_point():
                    assert rel_err(got_t, want_t) <= TOL, (seed, f)
                else:
                    assert torch.equal(got_t, want_t), (seed, f)
        results.append((logits.clone(), logits))
    assert all(torch.equal(kept, returned) for kept, returned in results)  # not overwritten
    assert prefill.graphed  # on a GPU: captured, not fallen back to eager


def test_state_dicts_are_interchangeable():
    ref, _ = pair(CASES["griffin-tiny"])
    opt = Model(CASES["griffin-tiny"], impl="optimized", device=DEVICE)
    opt.load_state_dict(ref.state_dict())  # same keys and shapes
    tokens, pos = data(1, 9, 256)
    with torch.no_grad():
        assert rel_err(opt(tokens, pos), ref(tokens, pos)) <= TOL


def test_optimized_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    opt = Model(CASES["hawk-tiny"], impl="optimized")  # on the CPU
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    tokens, pos = inputs(1, 4, 256)
    with pytest.raises(RuntimeError, match="runs its Triton kernels on a CUDA device"):
        opt(tokens, pos)
    with pytest.raises(ValueError, match="valid impls: reference, optimized"):
        Model(CASES["hawk-tiny"], impl="fast")


@pytest.mark.parametrize("kernel", [False, True], ids=["sdpa", "attention-kernel"])
@pytest.mark.parametrize(
    ("name", "prompt"),
    [("griffin-tiny", 9), ("mqa-tiny", 9), ("mqa-tiny", 20), ("recurrentgemma-tiny", 9)],
)
def test_static_decoder_equals_reference_forward(name, prompt, kernel):
    """The CUDA-graph decode path (eager on the CPU): device-side stream position, static ring
    buffer and preallocated global cache, across resets and past the window; load() restarts.
    (mqa-tiny after 20 tokens: the prefill's cache has 32 slots, more than the decoder's 28.)
    Attention through SDPA, or through kernels.decode_attention (the CUDA default)."""
    ref, opt = pair(CASES[name])
    tokens, pos = data(3, T, CASES[name].vocab_size, RESETS, seed=3)
    with torch.no_grad():
        full = ref(tokens, pos)
        _, cache = opt.prefill(tokens[:, :prompt], pos[:, :prompt])
        dec = StaticDecoder(opt, cache, capacity=T, attention_kernel=kernel)
        for _ in range(2):  # the second pass restarts from the same cache
            dec.load(cache)
            for t in range(prompt, T):
                logits = dec.step(tokens[:, t : t + 1], pos[:, t : t + 1])
                assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"
        with pytest.raises(ValueError, match="this decoder is full"):
            dec.step(tokens[:, :1], pos[:, :1])


@pytest.mark.parametrize(
    "name,batch", [("griffin-tiny", 1), ("mqa-tiny", 1), ("recurrentgemma-tiny", 2)]
)
def test_static_decoder_gemv_step_equals_reference_forward(name, batch):
    """The batch-1 step of fused GEMVs (kernels.gemv: norms, biases, residuals, gelu·mul and
    the soft cap folded in; the CUDA default at batch 1), across resets and past the window; on
    two rows too (each row its own pass over the weights)."""
    ref, opt = pair(CASES[name])
    resets = {row: at for row, at in RESETS.items() if row < batch}
    tokens, pos = data(batch, T, CASES[name].vocab_size, resets, seed=7)
    with torch.no_grad():
        full = ref(tokens, pos)
        _, cache = opt.prefill(tokens[:, :9], pos[:, :9])
        dec = StaticDecoder(opt, cache, capacity=T, gemv=True, attention_kernel=True, pdl=True)
        for t in range(9, T):
            logits = dec.step(tokens[:, t : t + 1], pos[:, t : t + 1])
            assert logits.shape == full[:, t : t + 1].shape
            assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"


@pytest.mark.parametrize("name", ["griffin-tiny", "mqa-tiny"])
def test_static_decoder_gemv_step_compiles_as_one_graph(name):
    """The GEMV step as torch.compile sees it on a GPU: traced whole (fullgraph) and
    functionalized (aot_eager; our operators that write decode state must allow it, else
    Inductor refuses the step and the decoder falls back to an eager one), equal to the eager
    step over several steps."""
    _, opt = pair(CASES[name])
    tokens, pos = data(1, T, CASES[name].vocab_size, {}, seed=11)
    with torch.no_grad():
        _, cache = opt.prefill(tokens[:, :9], pos[:, :9])
        decs = [
            StaticDecoder(opt, copy_cache(cache), capacity=T, gemv=True, attention_kernel=True)
            for _ in range(2)
        ]
        decs[1]._step = torch.compile(decs[1]._step, backend="aot_eager", fullgraph=True)
        for t in range(9, 12):
            want, got = (d.step(tokens[:, t : t + 1], pos[:, t : t + 1]) for d in decs)
            assert rel_err(got, want) <= 1e-6, f"decode step {t}"


def test_static_decoder_gemv_step_follows_weights_changed_in_place():
    """The GEMV step reads a transposed copy of each MLP up-projection: a weight changed in
    place after the decoder was built (as an optimizer step does) is copied again."""
    _, opt = pair(CASES["griffin-tiny"])
    tokens, pos = data(1, T, CASES["griffin-tiny"].vocab_size, {}, seed=9)
    with torch.no_grad():
        _, cache = opt.prefill(tokens[:, :9], pos[:, :9])
        dec = StaticDecoder(opt, copy_cache(cache), capacity=T, gemv=True)
        before = dec.step(tokens[:, 9:10], pos[:, 9:10]).clone()
        for blk in opt.blocks:
            blk.mlp_block.ffw_up.w.mul_(1.5)
        dec.load(cache)
        after = dec.step(tokens[:, 9:10], pos[:, 9:10])
        want = StaticDecoder(opt, copy_cache(cache), capacity=T, gemv=False).step(
            tokens[:, 9:10], pos[:, 9:10]
        )
    assert rel_err(after, want) <= TOL < rel_err(before, want)


def test_static_decoder_plain_ops_step_equals_reference_forward(monkeypatch):
    """The step a compiled StaticDecoder traces: our kernels' plain-torch twins (which Inductor
    can fuse), here run eagerly; equal to the reference across resets and past the window."""
    from models.torch import optimized

    ref, opt = pair(CASES["griffin-tiny"])
    tokens, pos = data(3, T, CASES["griffin-tiny"].vocab_size, RESETS, seed=5)
    called = []
    triton_norm = optimized.rms_norm
    monkeypatch.setattr(optimized, "rms_norm", lambda *a: called.append(1) or triton_norm(*a))
    with torch.no_grad():
        full = ref(tokens, pos)
        _, cache = opt.prefill(tokens[:, :11], pos[:, :11])
        dec = StaticDecoder(opt, cache, capacity=T)
        dec.compile = True  # on the CPU: no compiler, but the step that compile would trace
        called.clear()
        for t in range(11, T):
            logits = dec.step(tokens[:, t : t + 1], pos[:, t : t + 1])
            assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"
    assert len(called) == T - 11  # only the output layer's norm (Model.logits) ran the kernel


@pytest.mark.parametrize("name", ["griffin-tiny", "recurrentgemma-tiny"])  # the latter: soft cap
def test_chunked_loss_equals_the_full_loss_and_its_gradients(name):
    _, opt = pair(CASES[name])
    opt.train()
    tokens, pos = data(2, 13, CASES[name].vocab_size, {0: [5]}, seed=4)
    targets = torch.roll(tokens, -1, dims=1)
    full = torch.nn.functional.cross_entropy(opt(tokens, pos).flatten(0, 1), targets.flatten())
    grads_full = torch.autograd.grad(full, list(opt.parameters()))
    chunked = chunked_loss(opt, tokens, pos, targets, chunk_tokens=7)  # 26 tokens: 4 chunks
    grads_chunked = torch.autograd.grad(chunked, list(opt.parameters()))
    assert abs(chunked.item() - full.item()) <= 1e-5 * abs(full.item())
    for (name, _), g, r in zip(opt.named_parameters(), grads_chunked, grads_full, strict=True):
        assert rel_err(g, r) <= TOL, name


@pytest.mark.parametrize(
    "name, impl, t, resets",
    [
        ("griffin-tiny", "reference", 13, {0: [5]}),
        ("griffin-tiny", "optimized", 13, {0: [5]}),  # explicit masks
        ("griffin-tiny", "optimized", 9, None),  # the causal fast path, re-entered when recomputed
        ("mqa-tiny", "optimized", 13, None),
    ],
)
def test_checkpointed_blocks_equal_the_plain_loss_and_gradients(name, impl, t, resets, monkeypatch):
    from models.torch import optimized

    ref, opt = pair(CASES[name])
    model = (ref if impl == "reference" else opt).train()
    tokens, pos = data(2, t, CASES[name].vocab_size, resets, seed=4)
    targets = torch.roll(tokens, -1, dims=1)
    masks = []
    if impl == "optimized":
        sdpa = optimized._sdpa_mqa
        monkeypatch.setattr(
            optimized,
            "_sdpa_mqa",
            lambda q, k, v, mask: masks.append(mask is None) or sdpa(q, k, v, mask),
        )
    out = {}
    for ckpt in (False, True):
        masks.clear()
        h = model.features(tokens, pos, checkpoint=ckpt)
        loss = torch.nn.functional.cross_entropy(
            model.logits(h).float().flatten(0, 1), targets.flatten()
        )
        grads = torch.autograd.grad(loss, list(model.parameters()))
        out[ckpt] = loss.item(), grads, list(masks)
    (plain, g_plain, m_plain), (ckpt, g_ckpt, m_ckpt) = out[False], out[True]
    assert abs(ckpt - plain) <= 1e-6 * abs(plain)
    for (k, _), g, r in zip(model.named_parameters(), g_ckpt, g_plain, strict=True):
        assert rel_err(g, r) <= TOL, k
    if impl == "optimized":  # the recomputation takes the forward's attention path again
        assert len(m_ckpt) == 2 * len(m_plain) and set(m_ckpt) == set(m_plain)
        assert set(m_plain) == {resets is None}
