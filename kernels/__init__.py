"""Kernels, one module per op.

Each module holds the op's kernel(s), the public wrapper that checks shapes and launches, and a
`_ref` twin in plain framework code with the same signature; tests compare the two. JAX twins live
in `*_jax.py` beside the torch module of the same op.
"""
