"""Deliberately broken implementations for the harness tests (wrong outputs, exceptions, OOM,
a crashing process). Each module is an adapter like bench/impls/*.py."""

from bench.catalog import Implementation


def spec(name: str) -> Implementation:
    return Implementation(
        f"fake-{name}", "torch", f"fake_impls.{name}", ("torch",), "peer", f"test: {name}"
    )
