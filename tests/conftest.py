"""Shared test setup: float32 everywhere, deterministic seeds, JAX on the CPU, Triton kernels in
Triton's interpreter where there is no GPU."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest
import torch

if not torch.cuda.is_available():
    # Set before any kernel module is imported: triton.jit reads it when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_addoption(parser):
    parser.addoption(
        "--regress",
        action="store_true",
        help="run the kernel-speed benchmarks of tests/regress (nox -s regress)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--regress"):
        return
    skip = pytest.mark.skip(reason="kernel-speed benchmarks: nox -s regress (pytest --regress)")
    for item in items:
        if "regress" in item.path.parts:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """The device and its baseline key, for `python -m bench.regress check`."""
    from bench import regress

    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine_info["griffin_device"] = device
    machine_info["griffin_device_key"] = regress.device_key(device)
