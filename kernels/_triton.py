"""Triton, or a stand-in when it is not installed.

The reference twins (`*_ref`) and the models that use them must work without Triton (it is an
optional extra), while the Triton kernels live in the same modules. Without Triton, `triton.jit`
returns a kernel that raises a clear error when launched; nothing else changes.
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where Triton is absent
    AVAILABLE = False
    _MESSAGE = "Triton is not installed: pip install 'griffin-bench[triton]' (or triton)"

    class _Kernel:
        def __getitem__(self, grid):
            raise ImportError(_MESSAGE)

    class _Triton:
        @staticmethod
        def jit(fn=None, **_):
            return _Kernel() if fn is not None else (lambda f: _Kernel())

        @staticmethod
        def cdiv(a, b):
            return -(-a // b)

        @staticmethod
        def next_power_of_2(n):
            return 1 << (n - 1).bit_length()

    class _Language:
        def __getattr__(self, name):
            raise ImportError(_MESSAGE)

    triton = _Triton()
    tl = _Language()

# Whether kernels run in Triton's interpreter (the CPU tests): a few paths differ there (no
# griddepcontrol; tl.dot on 16-bit tiles), read once at import as Triton itself does.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

__all__ = ["AVAILABLE", "INTERPRET", "tl", "triton"]
