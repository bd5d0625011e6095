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
