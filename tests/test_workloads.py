"""Workload arithmetic, the timer's protocol and the analytic state size."""

import time

import numpy as np
import pytest
import torch

from bench import analytic
from bench.timing import CpuTimer, JaxTimer, TimingConfig
from bench.workloads import Measurement, Timing, derive, workload
from models.config import preset
from models.torch import Model


def test_timer_keeps_setup_and_first_call_out_of_the_samples():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.05 if len(calls) == 1 else 0.002)  # a slow first call (compilation)

    timing = CpuTimer().measure(
        fn,
        setup=lambda: time.sleep(0.02) or (),
        cfg=TimingConfig(warmup=2, min_reps=5, max_reps=7, budget_s=0.0),
    )
    assert len(timing.samples_ms) == 5 and len(calls) == 7
    assert timing.first_ms >= 50
    assert max(timing.samples_ms) < 15  # neither the setup nor the first call is in a sample
    s = timing.summary()
    assert s["p20_ms"] <= s["median_ms"] <= s["p80_ms"]


def test_timer_reps_follow_the_budget():
    timing = CpuTimer().measure(
        lambda: time.sleep(0.001),
        cfg=TimingConfig(warmup=1, min_reps=3, max_reps=1000, budget_s=0.05),
    )
    assert 3 <= len(timing.samples_ms) <= 60


class _CountingJaxTimer(JaxTimer):
    def __init__(self):
        self.synced = 0

    def sync(self, out) -> None:  # counts the syncs of outputs (not of a setup's empty args)
        self.synced += not (isinstance(out, tuple) and not out)
        super().sync(out)


def test_jax_timer_syncs_once_a_round():
    """JAX: back-to-back calls, one block_until_ready a round; a sample is the round's mean."""
    import jax.numpy as jnp

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)
        return jnp.ones(3)

    timer = _CountingJaxTimer()
    timing = timer.measure(fn, cfg=TimingConfig(warmup=2, min_reps=3, max_reps=12, budget_s=0.0))
    k = timing.calls_per_sample
    assert 3 <= k <= 5  # ceil(10 ms / a synced call of 2 ms and more)
    assert len(timing.samples_ms) == 3 and len(calls) == 2 + 3 * k
    assert timer.synced == 2 + 3  # the warm-up calls, then one per round
    assert all(1.9 < s < 4 for s in timing.samples_ms)  # per call, not per round
    assert timing.summary()["calls_per_sample"] == k


def test_jax_timer_times_calls_with_a_setup_one_at_a_time():
    import jax.numpy as jnp

    timer = _CountingJaxTimer()
    timing = timer.measure(
        lambda x: x + 1,
        setup=lambda: (jnp.zeros(3),),
        cfg=TimingConfig(warmup=1, min_reps=4, max_reps=4, budget_s=0.0),
    )
    assert timing.calls_per_sample == 1 and len(timing.samples_ms) == 4
    assert JaxTimer().calls_per_sample(0.05) == JaxTimer.MAX_CALLS
    assert JaxTimer().calls_per_sample(50.0) == 1


def test_derived_metrics_use_the_measured_ceilings():
    m = Measurement(Timing([2.0, 2.0, 2.0], 5.0, 1), {"flops": 4e12, "bytes": 2e9, "tokens": 100})
    d = derive(m, {"matmul_tflops": 1000.0, "copy_gbps": 2000.0})
    assert d["tflops"] == pytest.approx(2000.0) and d["mfu"] == pytest.approx(2.0)
    assert d["gbps"] == pytest.approx(1000.0) and d["mbu"] == pytest.approx(0.5)
    assert d["tokens_per_s"] == pytest.approx(50_000)


@pytest.mark.parametrize("name", ["hawk-tiny", "griffin-tiny", "mqa-tiny", "recurrentgemma-tiny"])
def test_analytic_cache_size_matches_our_cache(name):
    """App. F.4 state size == the bytes our cache holds, less what it allocates ahead (empty ring
    slots before the window fills, spare slots of a growing global cache) and slot positions."""
    cfg = preset(name)
    model = Model(cfg)
    for t in (3, 8, 21):
        tokens = torch.randint(0, cfg.vocab_size, (2, t))
        _, cache = model.prefill(tokens, torch.arange(t).repeat(2, 1))
        overhead = 0
        for c in cache.blocks:
            if hasattr(c, "pos"):
                slots = c.k.shape[1]
                kept = min(t, cfg.attention_window or t)
                overhead += c.pos.numel() * 8 + 2 * 2 * (slots - kept) * cfg.head_dim * 4
        assert cache.nbytes() - overhead == analytic.cache_bytes(cfg, 2, t, "float32")


def test_flops_of_a_recurrent_model_are_twice_its_matmul_weights():
    cfg = preset("hawk-1b")
    d, e, m = cfg.width, cfg.lru_width, cfg.mlp_width
    weights = cfg.depth * (3 * d * m + 3 * d * e + 2 * e * e / cfg.lru_heads + cfg.conv_width * e)
    per_token = analytic.forward_flops(cfg, 1, 0, 10, 0) / 10
    assert per_token == pytest.approx(2 * weights)
    assert analytic.train_flops(cfg, 2, 7) == pytest.approx(
        3 * analytic.forward_flops(cfg, 2, 0, 7, 7)
    )


def test_attention_flops_follow_the_window():
    local = preset("griffin-tiny")
    glob = local.replace(attention_window=None)
    start = 100  # far past the window of 8: a local query sees 9 keys, a global one 101+
    extra = analytic.forward_flops(glob, 1, start, 1, 0) - analytic.forward_flops(
        local, 1, start, 1, 0
    )
    n_attention = local.block_types.count("attention")
    assert extra == pytest.approx(
        4 * local.num_heads * local.head_dim * (start + 1 - 9) * n_attention
    )
    assert np.array_equal(analytic.keys_seen(local, np.array([0, 3, 8, 50])), [1, 4, 9, 9])


def test_workload_parameters_are_validated():
    assert workload("train_step").normalize({"seq_len": 16, "tokens_per_batch": 64})["batch"] == 4
    with pytest.raises(ValueError, match="not a multiple of seq_len"):
        workload("train_step").normalize({"seq_len": 16, "tokens_per_batch": 40})
    with pytest.raises(ValueError, match="needs parameter"):
        workload("decode").normalize({"prompt": 4})


def test_kernel_points_are_graph_timed_on_a_gpu_only():
    """torch kernel points on a GPU are timed as a CUDA-graph replay (bench.kernel_workloads.
    graphed); on the CPU, and for JAX, the call is timed as it is; a call whose capture fails is
    timed eagerly and the capture's error is kept for the record."""
    from bench.backends import JaxBackend, TorchBackend
    from bench.kernel_workloads import graphed

    def fn():
        return 1

    assert graphed(fn, TorchBackend("cpu")) == (fn, None, None)
    assert graphed(fn, JaxBackend("cuda")) == (fn, None, None)
    if not torch.cuda.is_available():  # a "GPU" backend here: the capture fails, eager timing
        timed, timer, error = graphed(fn, TorchBackend("cuda"))
        assert timed is fn and timer is None and error
