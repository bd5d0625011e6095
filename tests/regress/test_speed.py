"""Kernel-speed benchmarks for the regression gate (`nox -s regress`; see bench/regress.py).

Each case times one kernel implementation of the catalog, built and fed exactly as the `kernels`
suite does, with pytest-benchmark: warm-up rounds first, each round synchronised, the median
compared afterwards by `python -m bench.regress check`. On a GPU a torch case's round is one
replay of a CUDA graph of its calls (bench.regress.capture_round: no host work between kernels),
the eager calls where the capture fails; the _ref loops, JAX and the CPU run eagerly. Skipped
unless pytest runs with --regress. GRIFFIN_BENCH_INJECT_SLOWDOWN=CASE_ID[:FACTOR] plants a
slowdown in that case (the gate's own tests): a round of n calls runs round(n * FACTOR) calls
(default 2), its time still divided by n, so FACTOR 1.1 at the GPU's 10 calls a round is one
extra call, 10% slower (under a graph the extra calls are captured with the others); at one
call a round FACTOR 2 runs each call twice.
"""

import os
import warnings

import pytest
import torch

from bench import catalog, regress
from bench.backends import backend_for
from bench.kernel_workloads import make_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FORM = regress.form(DEVICE)


@pytest.mark.parametrize("case", regress.CASES, ids=lambda c: c.id)
def test_speed(case, benchmark):
    impl = catalog.implementation(case.impl)
    if catalog.missing_requirements(impl):
        pytest.skip(catalog.missing_requirements(impl))
    adapter = catalog.adapter(impl)
    reason = adapter.supports(case.op, DEVICE)
    if reason:
        pytest.skip(reason)
    shape = regress.SHAPES[FORM]
    backend = backend_for(impl.backend, DEVICE)
    handle = adapter.build(case.op, shape["dtype"], backend)
    params = {k: shape[k] for k in ("batch", "seq_len", "width")}
    inputs = make_inputs(case.op, params, 0, DEVICE, shape["dtype"])
    prepared = handle.prepare(inputs, bool(case.backward))
    fn, setup = prepared if isinstance(prepared, tuple) else (prepared, None)
    sync = handle.backend.timer().sync
    loop = "loop" in case.impl
    calls = 1 if loop else regress.CALLS_PER_ROUND[FORM]
    planted = regress.planted_calls(case.id, calls, os.environ.get("GRIFFIN_BENCH_INJECT_SLOWDOWN"))
    # a graph replays the same input tensors: a case with a per-round setup stays eager
    planned = regress.timer_for(case.id, DEVICE) if setup is None else "eager"
    target, timer, error = regress.round_target(fn, planted, sync, planned)
    if error:  # shown in pytest's summary, never an error (even under -W error)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(
                f"{case.id}: CUDA-graph capture failed, timed eagerly: {error}", stacklevel=1
            )

    rounds, loop_rounds = regress.ROUNDS[FORM]
    benchmark.extra_info["case"] = case.id
    benchmark.extra_info["calls_per_round"] = calls
    benchmark.extra_info["timer"] = timer
    if error:
        benchmark.extra_info["capture_error"] = error
    benchmark.pedantic(
        target,
        setup=(lambda: (setup(), {})) if setup else None,
        rounds=loop_rounds if loop else rounds,
        warmup_rounds=1 if loop and FORM == "cuda" else 3,
        iterations=1,
    )


@pytest.mark.parametrize("impl_name", [c.impl for c in regress.DECODE_CASES])
def test_decode_step_speed(impl_name, benchmark):
    """One decode step of a model after a prefill, through the implementation's handle (for the
    optimized model: one CUDA-graph replay on a GPU), the cache refreshed before every round."""
    from bench.worker import source_model
    from bench.workloads import _Generation
    from models.config import preset

    case = next(c for c in regress.DECODE_CASES if c.impl == impl_name)
    impl = catalog.implementation(impl_name)
    if catalog.missing_requirements(impl):
        pytest.skip(catalog.missing_requirements(impl))
    shape = regress.DECODE_SHAPES[FORM]
    cfg = preset(shape["model"])
    backend = backend_for(impl.backend, DEVICE)
    handle = catalog.adapter(impl).build(
        source_model(cfg.name, shape["dtype"], DEVICE), shape["dtype"], backend
    )
    gen = _Generation(handle, cfg, shape["batch"], shape["prompt"], 1, seed=0)
    sync = backend.timer().sync
    step = gen.pos[0]

    def target(cache):
        sync(handle.decode(gen.first, step, cache)[0])

    benchmark.extra_info["case"] = case.id
    benchmark.pedantic(
        target,
        setup=lambda: ((handle.fresh(gen.cache0, 1),), {}),
        rounds=regress.ROUNDS[FORM][0],
        warmup_rounds=2,
        iterations=1,
    )
