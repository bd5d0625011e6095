"""Framework-neutral parameter naming shared by the torch and JAX models.

The JAX params pytree is the torch state_dict as nested dicts, with `blocks` a list:
"blocks.3.recurrent_block.linear_x.weight" <-> params["blocks"][3]["recurrent_block"]["linear_x"]["weight"].
Layouts are the same on both sides (linear weights [out, in]), so conversion moves arrays only.
"""

from __future__ import annotations

from typing import Any


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.0.b": x} -> {"a": [{"b": x}]} (integer keys become list indices)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(tree)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_lists(node[str(i)]) for i in range(len(node))]
    return {k: _lists(v) for k, v in node.items()}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Inverse of unflatten."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for k, v in items:
        flat.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return flat
