"""Runs one job of a sweep: the ceilings, the reference outputs of the correctness gate, or the
points of one (model, dtype, implementation) group. The runner starts it in a fresh process
(`python -m bench.worker`, the job as JSON on stdin) so that a crash, a CUDA fault or a leaked
allocation ends with the process, and calls the same `run_job` in-process when isolation is off.

Protocol on stdout: lines starting with MARK, tab-separated:
    MARK done <key> <status> <median_ms or ->
    MARK ceilings <json>
    MARK ref <gate_key>     (a reference is ready: progress only)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import sys
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np

from bench.suite import KERNEL_MODEL

MARK = "@@griffin-bench@@"
# float32: the model tests' rule; bfloat16/float16: a few units of the format's rounding error
# through a deep stack of random layers, measured against the float32 reference.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}
# kernels against their float64 _ref: float32 arithmetic stays far below 1e-4; bf16 inputs and
# outputs carry their rounding (2^-9) into outputs and gradients (the kernel tests' rule)
KERNEL_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}
# the gate's allowance over the reference's own rounding error in the case dtype (gate_tolerance)
FLOOR_MARGIN = 1.5
STICKY_ERRORS = (
    "illegal memory access",
    "CUDA error",
    "device-side assert",
    "unspecified launch failure",
)
EXIT_RESTART = 86  # "my CUDA context is broken: start a fresh worker for the remaining points"


def source_model(model: str, dtype: str, device: str):
    """Our torch reference model with the case's weights: seeded per model, every parameter random
    (the zero-initialised norm scales and biases too), built directly in `dtype` on `device`."""
    import torch

    from models.config import preset
    from models.torch import Model

    torch.manual_seed(zlib.crc32(model.encode()))
    tdtype = getattr(torch, dtype)
    m = Model(preset(model), device=device, dtype=tdtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("scale", "bias", ".b")):
                p.normal_(0.0, 0.1 if name.endswith("scale") else 0.02)
    return m.eval()


def _gate_path(gate_dir: str, gate_key: str) -> Path:
    return Path(gate_dir) / hashlib.sha1(gate_key.encode()).hexdigest()[:20]


def _reference(gate_dir: str, gate_key: str) -> tuple[dict, dict]:
    """The stored reference outputs of a gate key and what computed them; raises if absent."""
    path = _gate_path(gate_dir, gate_key)
    if not path.with_suffix(".npz").exists():
        err = path.with_suffix(".err")
        why = err.read_text() if err.exists() else "not computed"
        raise RuntimeError(f"no reference output for the correctness gate ({why})")
    with np.load(path.with_suffix(".npz")) as data:
        ref = dict(data)
    return ref, json.loads(path.with_suffix(".json").read_text())


def _mismatch_message(errs: dict, tol: float) -> str:
    worst = max(errs, key=lambda k: errs[k])
    return (
        f"output differs from the reference: rel. error {errs[worst]:.3g} > tol {tol:.3g} "
        f"at {worst!r} (of {len(errs)} compared: "
        + ", ".join(f"{k} {v:.3g}" for k, v in errs.items())
        + ")"
    )


def _point(d: dict):
    from bench.suite import Point

    return Point(
        d["workload"], d["model"], d["impl"], d["dtype"], tuple((k, v) for k, v in d["params"])
    )


def _emit(*fields) -> None:
    print(MARK, *fields, sep="\t", flush=True)


def _setup_numerics(device: str) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (gate and fp32 cases)
    torch.backends.cudnn.allow_tf32 = False
    try:
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    except ImportError:
        pass


def run_ceilings(job: dict) -> dict:
    from bench import ceilings, env
    from bench.results import SCHEMA_VERSION, RecordWriter

    values = ceilings.measure(job["device"])
    RecordWriter(job["out"]).append(
        {
            "schema": SCHEMA_VERSION,
            "run_id": job["run_id"],
            "suite": job["suite"],
            "key": f"ceiling|{job['run_id']}",
            "workload": "ceiling",
            "model": None,
            "impl": None,
            "status": "ok",
            "ceilings": values,
            "time": _now(),
            "env": env.collect(job["device"]),
            "gpu_state": env.gpu_state() if job["device"].startswith("cuda") else None,
        }
    )
    return values


def run_reference(job: dict, emit) -> None:
    """Reference outputs (ours-torch-reference in float32 on the case's weights) for every gate
    key of one (model, dtype); float32 falls back to the case dtype if it does not fit. A case in
    a lower precision also records the reference's own error in that precision (its `floor`, see
    gate_tolerance), on the same weights and inputs."""
    import torch

    from bench import catalog
    from bench.backends import TorchBackend
    from bench.impls import ours_torch
    from bench.kernel_workloads import rel_errors
    from bench.workloads import input_seed, workload
    from models.config import preset

    points = [_point(d) for d in job["points"]]
    model, dtype, device = points[0].model, points[0].dtype, job["device"]
    if model == KERNEL_MODEL:
        return _kernel_references(job, points, emit)
    cfg = preset(model)
    backend = TorchBackend(device)
    todo = [
        p
        for p in points
        if not _gate_path(job["gate_dir"], p.gate_key).with_suffix(".npz").exists()
    ]

    def outputs(handle, p):
        return workload(p.workload).gate(handle, cfg, p.param_dict, input_seed(p.input_key))

    source, low = None, {}
    if dtype != "float32":
        try:
            source = source_model(model, dtype, device)
            handle = ours_torch.build(source, dtype, backend)
            low = {p.gate_key: outputs(handle, p) for p in todo}
        except Exception:  # no floor (the gate keeps the fixed tolerance); the pass below reports
            source, low = None, {}
            backend.free()
        handle = None
    attempts = ["float32", dtype] if dtype != "float32" else ["float32"]
    error = None
    for ref_dtype in attempts:
        try:
            if source is None:
                source = source_model(model, dtype, device)
            source = source.to(getattr(torch, ref_dtype))
            handle = ours_torch.build(source, ref_dtype, backend)
            for p in todo:
                path = _gate_path(job["gate_dir"], p.gate_key)
                if path.with_suffix(".npz").exists():  # stored by a float32 pass that then ran out
                    continue
                out = outputs(handle, p)
                info = {"reference": catalog.REFERENCE, "reference_dtype": ref_dtype}
                if ref_dtype != dtype and p.gate_key in low:
                    info["floor"] = max(rel_errors(low[p.gate_key], out).values())
                np.savez(path.with_suffix(".npz"), **out)
                path.with_suffix(".json").write_text(json.dumps(info))
                emit("ref", p.gate_key)  # progress, for the runner's timeout
            return
        except Exception as exc:
            error = exc
            del exc
            source = handle = None
            backend.free()
            if not backend.is_oom(error):
                break
    msg = f"{type(error).__name__}: {error}"[:1000]
    for p in points:
        path = _gate_path(job["gate_dir"], p.gate_key)
        if not path.with_suffix(".npz").exists():
            path.with_suffix(".err").write_text(msg)


def gate_tolerance(dtype: str, ref_info: dict) -> float:
    """The gate's tolerance: the dtype's (TOLERANCE), or FLOOR_MARGIN times the reference's own
    error in the case dtype where that is larger. The reference in bfloat16 is the official
    numerics rounded as the official code rounds them; an implementation as far from float32
    as that (within a different, equally valid order of roundings) is correct, and on the H200
    the plain bfloat16 models reached 0.05 at Hawk-7B's depth (0.049-0.052) by rounding alone."""
    floor = ref_info.get("floor")
    return max(TOLERANCE[dtype], FLOOR_MARGIN * floor) if floor is not None else TOLERANCE[dtype]


def _kernel_references(job: dict, points, emit) -> None:
    """float64 `_ref` outputs and gradients on a channel subset, for every kernel gate key."""
    from bench.workloads import input_seed, workload

    for p in points:
        path = _gate_path(job["gate_dir"], p.gate_key)
        try:
            ref = workload(p.workload).reference(
                p.param_dict, p.dtype, input_seed(p.gate_key), job["device"]
            )
            np.savez(path.with_suffix(".npz"), **ref)
            path.with_suffix(".json").write_text(
                json.dumps({"reference": "kernels _ref twin", "reference_dtype": "float64"})
            )
        except Exception as exc:
            path.with_suffix(".err").write_text(f"{type(exc).__name__}: {exc}"[:1000])
        emit("ref", p.gate_key)


def base_record(job: dict, p, impl: dict, env_info: dict | None) -> dict:
    """The fields every point record has, before the outcome is known."""
    from bench.results import SCHEMA_VERSION

    return {
        "schema": SCHEMA_VERSION,
        "run_id": job["run_id"],
        "suite": job["suite"],
        "key": p.key,
        "gate_key": p.gate_key,
        "workload": p.workload,
        "model": p.model,
        "impl": p.impl,
        "role": impl["role"],
        "backend": impl["backend"],
        "dtype": p.dtype,
        "params": p.param_dict,
        "status": None,
        "error": None,
        "correctness": None,
        "timing": None,
        "work": None,
        "metrics": None,
        "memory": None,
        "extra": None,
        "ceilings": job.get("ceilings"),
        "env": env_info,
    }


@contextlib.contextmanager
def _point_warnings(rec: dict):
    """Around a point's gate and measurement (model and kernel points alike): the distinct
    warnings raised go into its record's extra["warnings"] (and, as before, to stderr), so that
    a number measured on a degraded path (a compiled step fallen back to eager) says so."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    _keep_warnings(rec, seen)


def _keep_warnings(rec: dict, seen: list) -> None:
    """Deprecation notices (of the libraries' APIs, not of the measurement) go to stderr only."""
    for w in seen:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    kept = [w for w in seen if not issubclass(w.category, DeprecationWarning)]
    msgs = list(dict.fromkeys(f"{w.category.__name__}: {w.message}"[:1000] for w in kept))
    if msgs:
        rec["extra"] = {**(rec.get("extra") or {}), "warnings": msgs}


def _record_failure(rec: dict, exc: BaseException, backend) -> None:
    """An exception of a point becomes its status: `oom` (the expected signal of a size that does
    not fit), `unavailable` (base.NotOffered: the implementation does not offer what the point
    asks) or `error` with the message and the traceback's end."""
    from bench.impls.base import NotOffered

    if isinstance(exc, NotOffered):
        rec.update(status="unavailable", error=str(exc)[:2000])
        return
    oom = backend.is_oom(exc) or isinstance(exc, MemoryError)
    rec["status"] = "oom" if oom else "error"
    rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    if not oom:
        rec["traceback"] = traceback.format_exc()[-4000:]


def _context_broken(rec: dict) -> bool:
    """A CUDA fault leaves this process's context unusable: the rest goes to a fresh worker."""
    return rec["status"] == "error" and any(s in rec["error"] for s in STICKY_ERRORS)


def run_measure(job: dict, emit) -> int:
    """The points of one (model, dtype, implementation) group. Returns the process exit code."""

    from bench import catalog, env
    from bench.backends import backend_for, host_peak_rss_bytes
    from bench.kernel_workloads import rel_errors
    from bench.results import RecordWriter
    from bench.timing import TimingConfig
    from bench.workloads import derive, input_seed, workload
    from models.config import preset

    impl = job["impl"]
    points = [_point(d) for d in job["points"]]
    device = job["device"]
    writer = RecordWriter(job["out"])
    env_info = env.collect(device)
    cfg = None if points[0].model == KERNEL_MODEL else preset(points[0].model)
    dtype = points[0].dtype
    tcfg = TimingConfig(**job["timing"])
    backend = backend_for(impl["backend"], device)

    def finish(rec: dict, t0: float) -> None:
        rec["time"] = _now()
        rec["elapsed_s"] = time.perf_counter() - t0
        rec["gpu_state"] = env.gpu_state() if device.startswith("cuda") else None
        writer.append(rec)
        median = (rec.get("timing") or {}).get("median_ms")
        emit("done", rec["key"], rec["status"], "-" if median is None else f"{median:.6g}")

    spec = catalog.Implementation(
        **{k: tuple(v) if k in ("requires", "ops") else v for k, v in impl.items()}
    )
    if spec.kind == "kernel":
        return _measure_kernels(job, spec, points, backend, finish, env_info, tcfg)
    reason = catalog.missing_requirements(spec)
    if reason is None:
        mod = catalog.adapter(spec)
        reason = mod.supports(cfg)
        if reason is None and hasattr(backend, "unavailable"):
            reason = backend.unavailable()
    if reason is None:
        env_info["device_label"] = backend.device_label()
        t_build = time.perf_counter()
        try:
            handle = mod.build(source_model(cfg.name, dtype, device), dtype, backend)
            backend.free()  # the source model's weights, once copied
        except Exception as exc:
            status = "oom" if backend.is_oom(exc) else "error"
            msg = f"building the model failed: {type(exc).__name__}: {exc}"[:2000]
            for p in points:
                rec = base_record(job, p, impl, env_info)
                rec.update(status=status, error=msg)
                finish(rec, t_build)
            return 0
        build_s = time.perf_counter() - t_build
    else:
        for p in points:
            rec = base_record(job, p, impl, env_info)
            rec.update(status="unavailable", error=reason)
            finish(rec, time.perf_counter())
        return 0

    def gate_and_measure(p, rec):
        """Gate one point against its reference output, then time it; fills in `rec`."""
        wl, params, seed = workload(p.workload), p.param_dict, input_seed(p.input_key)
        try:
            ref, ref_info = _reference(job["gate_dir"], p.gate_key)
            t_gate = time.perf_counter()
            out = wl.gate(handle, cfg, params, seed)
            rec["extra"]["gate_s"] = time.perf_counter() - t_gate
            errs = rel_errors(out, ref)
            err, tol = max(errs.values()), gate_tolerance(dtype, ref_info)
            rec["correctness"] = {
                **ref_info,
                "rel_err": err,
                "rel_err_by_output": errs,
                "tol": tol,
                "passed": err <= tol,
            }
            if not err <= tol:
                rec.update(status="mismatch", error=_mismatch_message(errs, tol))
                return
            del out
            backend.free()
            backend.reset_peak()
            m = wl.measure(handle, cfg, params, dtype, seed, tcfg)
            memory = dict(m.memory)
            memory["peak_alloc_bytes"] = backend.peak_bytes()
            memory["host_peak_rss_bytes"] = host_peak_rss_bytes()
            state = env.gpu_state() if device.startswith("cuda") else None
            memory["device_used_bytes"] = state["memory_used_bytes"] if state else None
            rec.update(
                status="ok",
                timing=m.timing.summary(),
                timer=backend.timer().kind,
                work=m.work,
                metrics={**derive(m, job.get("ceilings")), **m.extra.pop("metrics", {})},
                memory=memory,
                extra={**rec["extra"], **m.extra},
            )
        except Exception as exc:
            _record_failure(rec, exc, backend)
            del exc
            backend.free()

    for p in points:
        t0 = time.perf_counter()
        rec = base_record(job, p, impl, env_info)
        rec["extra"] = {"build_s": build_s}
        with _point_warnings(rec):
            gate_and_measure(p, rec)
        finish(rec, t0)
        if _context_broken(rec):
            return EXIT_RESTART
    return 0


def _measure_kernels(job, spec, points, backend, finish, env_info, tcfg) -> int:
    """The points of one kernel implementation: gate against the float64 reference, then time."""
    from bench import catalog
    from bench.backends import host_peak_rss_bytes
    from bench.kernel_workloads import rel_errors
    from bench.workloads import derive, input_seed, workload

    tol = KERNEL_TOLERANCE
    missing = catalog.missing_requirements(spec)
    mod = None if missing else catalog.adapter(spec)
    handles: dict[str, object] = {}
    for p in points:
        t0 = time.perf_counter()
        rec = base_record(job, p, dataclasses.asdict(spec), env_info)
        wl, params, seed = workload(p.workload), p.param_dict, input_seed(p.gate_key)
        reason = missing or mod.supports(wl.op, backend.device)
        if reason:
            rec.update(status="unavailable", error=reason)
            finish(rec, t0)
            continue
        with _point_warnings(rec):
            try:
                if wl.op not in handles:
                    handles[wl.op] = mod.build(wl.op, p.dtype, backend)
                handle = handles[wl.op]
                env_info["device_label"] = handle.backend.device_label()
                ref, ref_info = _reference(job["gate_dir"], p.gate_key)
                errs = rel_errors(wl.gate_outputs(handle, params, p.dtype, seed), ref)
                worst = max(errs.values())
                rec["correctness"] = {
                    **ref_info,
                    "rel_err": worst,
                    "rel_err_by_output": errs,
                    "tol": tol[p.dtype],
                    "passed": worst <= tol[p.dtype],
                }
                if not worst <= tol[p.dtype]:
                    rec.update(status="mismatch", error=_mismatch_message(errs, tol[p.dtype]))
                else:
                    backend.free()
                    backend.reset_peak()
                    m = wl.measure(handle, params, p.dtype, seed, tcfg)
                    rec.update(
                        status="ok",
                        timing=m.timing.summary(),
                        timer=m.timer or handle.backend.timer().kind,
                        work=m.work,
                        metrics=derive(m, job.get("ceilings")),
                        memory={
                            "peak_alloc_bytes": backend.peak_bytes(),
                            "host_peak_rss_bytes": host_peak_rss_bytes(),
                        },
                        extra=m.extra,
                    )
            except Exception as exc:
                _record_failure(rec, exc, backend)
                del exc
                backend.free()
        finish(rec, t0)
        if _context_broken(rec):
            return EXIT_RESTART
    return 0


def run_job(job: dict, emit=_emit) -> int:
    _setup_numerics(job["device"])
    if job["kind"] == "ceilings":
        emit("ceilings", json.dumps(run_ceilings(job)))
        return 0
    if job["kind"] == "reference":
        run_reference(job, emit)
        return 0
    return run_measure(job, emit)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed sweep leaves no worker writing."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    _die_with_parent()
    job = json.loads(sys.stdin.read())
    if os.getppid() != job.get("parent_pid", os.getppid()):
        return 1  # the parent died before we armed the death signal
    return run_job(job)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C reaches the worker too: the parent says what happened
        sys.exit(130)
