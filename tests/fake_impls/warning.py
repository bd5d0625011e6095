"""Computes the right output but warns in every call (as a compiled step that fell back to an
eager one does): the records must carry the warning."""

import warnings

from bench.impls import ours_torch


def supports(cfg):
    return None


class Handle(ours_torch.Handle):
    def prefill(self, tokens, pos):
        warnings.warn("the compiled step failed; eager step (test)", stacklevel=2)
        return super().prefill(tokens, pos)


def build(source, dtype, backend):
    return Handle(source, backend)
