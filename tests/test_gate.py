"""The correctness gate of generation points (decode, throughput): every implementation is fed the
same prompt and token stream (teacher-forced), over steps that reach past the local-attention
window; the throughput search; and the generation workloads' bad input."""

import pytest
from fake_impls import small_memory, spec
from test_harness import run_suite, write_suite

from bench import catalog, suite
from bench.worker import FLOOR_MARGIN, gate_tolerance, source_model
from bench.workloads import GATE_STEPS, Throughput, gate_plan, sequence_bytes
from models.config import preset


def with_fakes(monkeypatch, *names):
    monkeypatch.setattr(
        catalog, "IMPLEMENTATIONS", catalog.IMPLEMENTATIONS + tuple(spec(n) for n in names)
    )


def test_gate_plan_reaches_past_the_window():
    griffin, mqa, hawk = (preset(f"{f}-tiny") for f in ("griffin", "mqa", "hawk"))
    window = griffin.attention_window  # 8
    g = GATE_STEPS
    # short of the window: the first GATE_STEPS steps
    assert gate_plan(griffin, 1, 4) == ((0, 4),)
    # crossing it: a second phase over positions window - 1 .. window + 2
    (first, (start, n)) = gate_plan(griffin, 1, 100)
    assert first == (0, g) and (1 + start, n) == (window - 1, g)
    # a prompt just short of it: one phase running across
    assert gate_plan(griffin, 6, 100) == ((0, window - 1 - 6 + g),)
    # a generation ending at the window's edge does not cross it
    assert gate_plan(griffin, 1, window) == ((0, g),)
    # a prompt past the window already: every step is past it
    assert gate_plan(griffin, 12, 100) == ((0, g),)
    # no local attention: global MQA and attention-free Hawk have no second phase
    assert gate_plan(mqa, 1, 100) == ((0, g),) and gate_plan(hawk, 1, 100) == ((0, g),)
    assert gate_plan(griffin, 1, 1) == ((0, 1),)


def test_decode_points_of_different_lengths_share_one_reference():
    body = """
[[case]]
workload = "decode"
models = ["griffin-tiny"]
impls = ["ours-torch-reference"]
batch = 2
prompt = 12
steps = [4, 8, 16]
"""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        s = suite.load(str(write_suite(Path(d), body)), "cpu")
    keys = {p.gate_key for p in s.points}
    assert len(s.points) == 3 and len(keys) == 1 and "gate_steps=4" in keys.pop()
    assert len({p.key for p in s.points}) == 3


CASE = """
[[case]]
workload = "decode"
models = [{models}]
impls = [{impls}]
dtype = "{dtype}"
batch = {batch}
prompt = [{prompts}]
steps = [{steps}]
"""


def _case(models, impls, prompts, steps, dtype="float32", batch=2):
    q = ", ".join(f'"{x}"' for x in (models if isinstance(models, list) else [models]))
    i = ", ".join(f'"{x}"' for x in impls)
    return CASE.format(
        models=q, impls=i, dtype=dtype, batch=batch,
        prompts=", ".join(map(str, prompts)), steps=", ".join(map(str, steps)),
    )  # fmt: skip


def test_a_near_tie_argmax_passes_the_gate(monkeypatch, tmp_path):
    """Generating from its own picks, it follows another token stream; teacher-forced, the
    gate compares it on the reference's inputs and it passes, at a prompt past the window and
    one whose generation crosses it."""
    with_fakes(monkeypatch, "near_tie")
    body = _case("griffin-tiny", ["fake-near_tie"], [2, 12], [16])
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert len(records) == 2
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["correctness"]["passed"] and len(r["correctness"]["rel_err_by_output"]) >= 3


def test_a_ring_slot_off_by_one_past_the_window_is_a_mismatch(monkeypatch, tmp_path):
    with_fakes(monkeypatch, "ring_off_by_one")
    body = _case("griffin-tiny", ["fake-ring_off_by_one"], [2, 12], [16])
    body += _case("griffin-tiny", ["fake-ring_off_by_one"], [1], [4])  # never past the window
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    by = {(r["params"]["prompt"], r["params"]["steps"]): r for r in records}
    for point in ((2, 16), (12, 16)):
        r = by[point]
        assert r["status"] == "mismatch", point
        assert "step" in r["error"] and "at 'step" in r["error"]
        assert r["timing"] is None
    assert by[(1, 4)]["status"] == "ok"


def test_bfloat16_against_the_float32_reference_passes(tmp_path):
    """Our own reference model in bfloat16 (torch and JAX), gated against itself in float32 at
    batch 16 over prompts past the window: no false alarm."""
    body = _case(["griffin-tiny", "mqa-tiny"], ["ours-torch-reference", "ours-jax-reference"],
                 [16, 32, 64], [6], dtype="bfloat16", batch=16)  # fmt: skip
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert len(records) == 12
    bad = [(r["model"], r["impl"], r["params"], r["error"]) for r in records if r["status"] != "ok"]
    assert not bad
    for r in records:  # the reference's own bfloat16 error is recorded, and sets the tolerance
        c = r["correctness"]
        assert c["reference_dtype"] == "float32" and 0 < c["floor"] < 0.05
        assert c["tol"] == gate_tolerance("bfloat16", c) == max(0.05, FLOOR_MARGIN * c["floor"])


def test_the_tolerance_follows_the_references_own_rounding():
    assert gate_tolerance("bfloat16", {}) == 0.05  # no floor: the dtype's
    assert gate_tolerance("bfloat16", {"floor": 0.02}) == 0.05
    assert gate_tolerance("bfloat16", {"floor": 0.052}) == pytest.approx(FLOOR_MARGIN * 0.052)
    assert gate_tolerance("float32", {"reference_dtype": "float32"}) == 1e-4


def test_a_planted_defect_in_bfloat16_is_still_a_mismatch(monkeypatch, tmp_path):
    """The floor of the bfloat16 reference does not hide a real defect past the window."""
    with_fakes(monkeypatch, "ring_off_by_one")
    body = _case("griffin-tiny", ["fake-ring_off_by_one"], [12], [16], dtype="bfloat16")
    (r,) = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    assert r["status"] == "mismatch", r["error"]
    assert r["correctness"]["rel_err"] > 3 * r["correctness"]["tol"]


THROUGHPUT = """
[[case]]
workload = "throughput"
models = ["hawk-tiny"]
impls = ["fake-small_memory"]
gen_len = 6
max_batch = {max_batch}
"""


def test_throughput_search_finds_the_largest_batch_that_fits(monkeypatch, tmp_path):
    with_fakes(monkeypatch, "small_memory")
    monkeypatch.setattr(small_memory, "FIT", 5)
    monkeypatch.setattr(small_memory, "FREE", None)
    path = write_suite(tmp_path, THROUGHPUT.format(max_batch=16))
    (r,) = run_suite(path, tmp_path / "a.jsonl")
    assert r["status"] == "ok", r["error"]
    extra = r["extra"]
    assert extra["batch"] == 5 and extra["limited_by"] == "memory"
    tried = [(p["batch"], p["status"]) for p in extra["probes"]]
    assert tried[0] == (16, "oom") and (5, "ok") in tried and (6, "oom") in tried
    assert r["work"]["tokens"] == 5 * 6 and r["timing"]["reps"] >= 1

    # under the cap: the cap limits
    (r,) = run_suite(write_suite(tmp_path, THROUGHPUT.format(max_batch=3), "b"), tmp_path / "b")
    assert (r["extra"]["batch"], r["extra"]["limited_by"]) == (3, "max_batch")
    assert [p["batch"] for p in r["extra"]["probes"]] == [3]

    # nothing fits: recorded oom with the reason (here the gate's generation already fails)
    monkeypatch.setattr(small_memory, "FIT", 0)
    (r,) = run_suite(write_suite(tmp_path, THROUGHPUT.format(max_batch=4), "c"), tmp_path / "c")
    assert r["status"] == "oom" and "out of memory" in r["error"]
    # and the search itself, when not even batch 1 fits
    from bench.timing import TimingConfig

    handle = small_memory.build(source_model("hawk-tiny", "float32", "cpu"), "float32", None)
    p = {"prompt": 1, "gen_len": 6, "max_batch": 4}
    with pytest.raises(MemoryError, match="even batch 1 does not fit"):
        Throughput().measure(handle, preset("hawk-tiny"), p, "float32", 0, TimingConfig())


def test_shorter_throughput_lengths_are_read_inside_the_longest(monkeypatch, tmp_path):
    """Lengths longest first: after a length held at max_batch, a shorter one skips the search
    and is read at its mark in the longest generation (a gate across the window for 16 steps,
    none for 8 does not split their inputs); a memory-limited length searches again, and reads
    the longer generation only where its search finds the same batch."""
    with_fakes(monkeypatch, "small_memory")
    monkeypatch.setattr(small_memory, "FREE", None)
    case = """
[[case]]
workload = "throughput"
models = ["{model}"]
impls = ["fake-small_memory"]
gen_len = [16, 8]
max_batch = {max_batch}
"""
    path = write_suite(tmp_path, case.format(model="griffin-tiny", max_batch=3))
    long, short = run_suite(path, tmp_path / "a.jsonl")
    assert (long["status"], short["status"]) == ("ok", "ok")
    assert long["extra"]["timed_within_steps"] == 16 and long["extra"]["probes"]
    assert short["extra"]["timed_within_steps"] == 16
    assert short["extra"]["batch_from_gen_len"] == 16 and short["extra"]["probes"] == []
    assert short["extra"]["batch"] == 3 and short["work"]["tokens"] == 3 * 8
    assert short["timing"]["median_ms"] < long["timing"]["median_ms"]

    monkeypatch.setattr(small_memory, "FIT", 5)
    path = write_suite(tmp_path, case.format(model="hawk-tiny", max_batch=8), "b")
    long, short = run_suite(path, tmp_path / "b.jsonl")
    assert long["extra"]["limited_by"] == short["extra"]["limited_by"] == "memory"
    assert short["extra"]["probes"] and "batch_from_gen_len" not in short["extra"]
    assert short["extra"]["batch"] == long["extra"]["batch"] == 5
    assert short["extra"]["timed_within_steps"] == 16

    # a decode that reads its whole reserved cache: no search again, but its own generation
    monkeypatch.setattr(small_memory, "FIT", 64)
    path = write_suite(tmp_path, case.format(model="mqa-tiny", max_batch=4), "c")
    long, short = run_suite(path, tmp_path / "c.jsonl")
    assert short["extra"]["batch_from_gen_len"] == 16 and short["extra"]["probes"] == []
    assert short["extra"]["timed_within_steps"] == 8


def test_throughput_bound_comes_from_free_memory(monkeypatch):
    cfg = preset("mqa-tiny")
    per_seq = sequence_bytes(cfg, 1 + 100, "float32")
    handle = small_memory.build(source_model("mqa-tiny", "float32", "cpu"), "float32", None)
    p = {"prompt": 1, "gen_len": 100, "max_batch": 64}
    monkeypatch.setattr(small_memory, "FREE", int(10.5 * per_seq / 0.9))
    assert Throughput().batch_bound(handle, cfg, p, "float32") == (10, "memory")
    monkeypatch.setattr(small_memory, "FREE", 10**15)
    assert Throughput().batch_bound(handle, cfg, p, "float32") == (64, "max_batch")
    # a longer generation holds more per sequence: a smaller bound
    monkeypatch.setattr(small_memory, "FREE", int(10.5 * per_seq / 0.9))
    longer = Throughput().batch_bound(handle, cfg, {**p, "gen_len": 1000}, "float32")
    assert longer[0] < 10


@pytest.mark.parametrize(
    "case,message",
    [
        ('workload = "throughput"\nmodels = ["hawk-tiny"]\ngen_len = 8\nmax_batch = 0',
         "max_batch must be a positive integer"),
        ('workload = "throughput"\nmodels = ["hawk-tiny"]\ngen_len = 2000000',
         "prompt \\+ gen_len = 2000001 tokens; at most 1048576"),
        ('workload = "decode"\nmodels = ["hawk-tiny"]\nprompt = 4\nsteps = 0',
         "steps must be a positive integer"),
    ],
)  # fmt: skip
def test_generation_bad_input_is_one_clear_line(tmp_path, case, message):
    path = write_suite(tmp_path, f"[[case]]\n{case}\n")
    with pytest.raises(suite.SuiteError, match=message) as info:
        suite.load(str(path), "cpu")
    assert "\n" not in str(info.value)


def test_shorter_generations_are_timed_within_the_longest(tmp_path):
    """Steps listed longest first: one timed generation per prompt, the shorter points read at
    their marks (fewer steps, less time); listed shortest first, each is its own generation; and
    a decode that reads its whole reserved cache (the reference's global attention) times each
    length on its own."""
    body = (
        _case("hawk-tiny", ["ours-torch-reference"], [3], [8, 4])
        + _case("griffin-tiny", ["ours-torch-reference"], [3], [2, 6])
        + _case("mqa-tiny", ["ours-torch-reference"], [3], [6, 2])
    )
    records = run_suite(write_suite(tmp_path, body), tmp_path / "out.jsonl")
    by = {(r["model"], r["params"]["steps"]): r for r in records}
    assert all(r["status"] == "ok" for r in records)
    assert by[("hawk-tiny", 8)]["extra"]["timed_within_steps"] == 8
    assert by[("hawk-tiny", 4)]["extra"]["timed_within_steps"] == 8
    assert by[("hawk-tiny", 4)]["timing"]["median_ms"] < by[("hawk-tiny", 8)]["timing"]["median_ms"]
    assert by[("griffin-tiny", 2)]["extra"]["timed_within_steps"] == 2
    assert by[("griffin-tiny", 6)]["extra"]["timed_within_steps"] == 6
    assert by[("mqa-tiny", 6)]["extra"]["timed_within_steps"] == 6
    assert by[("mqa-tiny", 2)]["extra"]["timed_within_steps"] == 2


def test_which_decodes_read_their_whole_reserve():
    """The handles that say their step reads the reserved global cache: ours on the CPU for a
    model with global attention; never for local attention only."""
    from bench.backends import TorchBackend
    from bench.impls import ours_torch, ours_torch_optimized

    be = TorchBackend("cpu")
    mqa = source_model("mqa-tiny", "float32", "cpu")
    griffin = source_model("griffin-tiny", "float32", "cpu")
    assert ours_torch.Handle(mqa, be).reads_reserve
    assert not ours_torch.Handle(griffin, be).reads_reserve
    assert ours_torch_optimized.Handle(mqa, be).reads_reserve  # masked SDPA on the CPU

    class Gpu(TorchBackend):
        on_gpu = True

    # on a GPU the decoder's attention kernel reads only the filled slots
    assert not ours_torch_optimized.Handle(mqa, Gpu("cpu")).reads_reserve


def test_which_jax_decodes_read_their_whole_reserve(monkeypatch):
    """ours-jax-optimized reads the whole reserve where its global attention is XLA's (the CPU),
    not where it is the Pallas decode attention (a GPU's default; forced here)."""
    from bench.backends import JaxBackend
    from bench.impls import ours_jax, ours_jax_optimized
    from models.jax.optimized import DECODE_ATTENTION_ENV

    be = JaxBackend("cpu")
    mqa = source_model("mqa-tiny", "float32", "cpu")
    monkeypatch.delenv(DECODE_ATTENTION_ENV, raising=False)
    assert ours_jax.build(mqa, "float32", be).reads_reserve
    assert ours_jax_optimized.build(mqa, "float32", be).reads_reserve
    monkeypatch.setenv(DECODE_ATTENTION_ENV, "pallas")
    assert ours_jax.build(mqa, "float32", be).reads_reserve  # the reference: XLA always
    assert not ours_jax_optimized.build(mqa, "float32", be).reads_reserve


def test_the_optimized_handle_keeps_a_small_decoder_beside_a_large_one(monkeypatch):
    """A throughput gate's decoder (batch 4) survives the generation's (batch 32) and is reused by
    the next length's gate; a probe at another large batch drops the previous probe's decoder (a
    probe never shares memory with another); the MAX_BUILT-th next build resets torch.compile
    and drops everything."""
    from types import SimpleNamespace

    import torch

    import models.torch.optimized
    from bench.backends import TorchBackend
    from bench.impls import ours_torch_optimized as opt

    class Decoder:  # what fresh() asks of a StaticDecoder
        def __init__(self, model, cache, capacity):
            self.batch_size, self.capacity, self.loads = cache.batch_size, capacity, 0

        def load(self, cache):
            self.loads += 1

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(models.torch.optimized, "StaticDecoder", Decoder)
    model = source_model("griffin-tiny", "float32", "cpu").use_impl("optimized")
    h = opt.Handle(model, TorchBackend("cpu"))

    def cache(batch):
        return SimpleNamespace(batch_size=batch, length=3)

    gate = h.fresh(cache(4), 20)
    big = h.fresh(cache(32), 20)
    assert set(h._decoders) == {4, 32}
    assert h.fresh(cache(4), 10) is gate and gate.loads == 1  # room enough: reloaded
    other = h.fresh(cache(16), 20)  # another probe: 32 goes, and 4 (not 1/8 of 16) too
    assert set(h._decoders) == {16} and other is not big and not resets
    h.fresh(cache(4), 20)  # the fourth build: torch.compile reset first, everything dropped
    assert resets == [1] and set(h._decoders) == {4}
    assert opt.MAX_BUILT == 3


def test_marked_timer_times_every_prefix():
    import time

    from bench.timing import CpuTimer, TimingConfig

    def work(mark):
        for i in range(1, 5):
            time.sleep(0.002 * i)
            mark(i, None)

    cfg = TimingConfig(warmup=0, min_reps=3)
    out = CpuTimer().measure_marked(work, [1, 2, 4], cfg=cfg)
    assert sorted(out) == [1, 2, 4] and all(len(t.samples_ms) == 3 for t in out.values())
    assert out[1].median_ms < out[2].median_ms < out[4].median_ms
    assert out[4].median_ms >= 20 and out[1].first_ms is None
    with pytest.raises(RuntimeError, match="never reached mark"):
        CpuTimer().measure_marked(work, [1, 9], cfg=cfg)


def test_a_reference_out_of_memory_in_float32_falls_back_keeping_what_it_stored(
    monkeypatch, tmp_path
):
    """The reference job's float32 pass runs out of memory at its second point: that point's
    reference is taken in the case dtype (no floor), the first keeps its float32 one."""
    import json
    import types

    import torch

    from bench import workloads
    from bench.runner import _point_dict
    from bench.worker import _gate_path, run_reference

    body = """
[[case]]
workload = "prefill"
models = ["griffin-tiny"]
impls = ["ours-torch-reference"]
dtype = "bfloat16"
batch = 1
prompt = [8, 16]
"""
    points = suite.load(str(write_suite(tmp_path, body)), "cpu").points
    real = workloads.workload

    def flaky(name):
        wl = real(name)

        def gate(handle, cfg, p, seed):
            if p["prompt"] == 16 and next(handle.model.parameters()).dtype == torch.float32:
                raise torch.OutOfMemoryError("CUDA out of memory (planted)")
            return wl.gate(handle, cfg, p, seed)

        return types.SimpleNamespace(gate=gate)

    monkeypatch.setattr(workloads, "workload", flaky)
    job = {"device": "cpu", "gate_dir": str(tmp_path), "points": [_point_dict(p) for p in points]}
    run_reference(job, lambda *a: None)
    info = {
        dict(p.params)["prompt"]: json.loads(
            _gate_path(str(tmp_path), p.gate_key).with_suffix(".json").read_text()
        )
        for p in points
    }
    assert info[8]["reference_dtype"] == "float32" and info[8]["floor"] > 0
    assert info[16]["reference_dtype"] == "bfloat16" and "floor" not in info[16]
