"""prefill + N decode steps equals one full forward, for every family and both backends.

Covers decoding past the attention window (the ring buffer wraps), a global cache that grows,
document resets inside the prompt (also within the last conv-width tokens), at the first decoded
token and later inside decoding, and prompts shorter than the window.
"""

import jax
import jax.numpy as jnp
import pytest
import torch
from util import TOL, inputs, randomize_zeros_, randomize_zeros_jax, rel_err

import models.jax
from models.config import preset
from models.torch import Model

CASES = {
    "hawk-tiny": preset("hawk-tiny"),
    "griffin-tiny": preset("griffin-tiny"),
    "mqa-tiny": preset("mqa-tiny"),  # global: the cache grows 16 -> 32 -> 64 slots
    "mqa-local-tiny": preset("mqa-tiny").replace(name="mqa-local-tiny", attention_window=8),
    "recurrentgemma-tiny": preset("recurrentgemma-tiny"),
}
T = 40
# row 0: resets in the prompt's last conv window (10) and inside decoding (25);
# row 1: a reset at the first decoded token (prompt 12); row 2: no reset at all.
RESETS = {0: [10, 25], 1: [12]}


class TorchRunner:
    def __init__(self, cfg):
        self.model = Model(cfg).eval()
        randomize_zeros_(self.model, std=0.2)

    def forward(self, tokens, pos):
        with torch.no_grad():
            return self.model(tokens, pos)

    def prefill(self, tokens, pos):
        with torch.no_grad():
            return self.model.prefill(tokens, pos)

    def decode(self, tokens, pos, cache):
        with torch.no_grad():
            return self.model.decode(tokens, pos, cache)


class JaxRunner:
    def __init__(self, cfg):
        self.model = models.jax.Model(cfg)
        self.params = randomize_zeros_jax(self.model.init(jax.random.PRNGKey(3)), std=0.2)

    def forward(self, tokens, pos):
        return self.model.forward(
            self.params, jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy())
        )

    def prefill(self, tokens, pos):
        return self.model.prefill(
            self.params, jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy())
        )

    def decode(self, tokens, pos, cache):
        return self.model.decode(
            self.params, jnp.asarray(tokens.numpy()), jnp.asarray(pos.numpy()), cache
        )


RUNNERS = {"torch": TorchRunner, "jax": JaxRunner}


@pytest.mark.parametrize("backend", RUNNERS)
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("prompt", [1, 5, 12])
def test_prefill_then_decode_equals_forward(backend, name, prompt):
    runner = RUNNERS[backend](CASES[name])
    resets = {0: RESETS[0], 1: [prompt]}
    tokens, pos = inputs(3, T, CASES[name].vocab_size, resets, seed=prompt)
    full = runner.forward(tokens, pos)

    logits, cache = runner.prefill(tokens[:, :prompt], pos[:, :prompt])
    assert rel_err(logits, full[:, :prompt]) <= TOL
    for t in range(prompt, T):
        logits, cache = runner.decode(tokens[:, t : t + 1], pos[:, t : t + 1], cache)
        assert rel_err(logits, full[:, t : t + 1]) <= TOL, f"decode step {t}"
    assert cache.length == T


def test_decode_leaves_the_old_cache_unchanged():
    runner = TorchRunner(CASES["griffin-tiny"])
    tokens, pos = inputs(2, 10, 256)
    _, cache = runner.prefill(tokens[:, :9], pos[:, :9])
    first, _ = runner.decode(tokens[:, 9:], pos[:, 9:], cache)
    again, _ = runner.decode(tokens[:, 9:], pos[:, 9:], cache)
    assert torch.equal(first, again)


def test_reset_cuts_off_the_previous_document():
    """After a reset, what came before must not matter: same document, same logits."""
    runner = TorchRunner(CASES["griffin-tiny"])
    tokens, pos = inputs(1, 30, 256, {0: [17]})
    other = tokens.clone()
    other[:, :17] = (other[:, :17] + 1) % 256  # a different first document
    _, cache_a = runner.prefill(tokens[:, :20], pos[:, :20])
    _, cache_b = runner.prefill(other[:, :20], pos[:, :20])
    for t in range(20, 30):
        la, cache_a = runner.decode(tokens[:, t : t + 1], pos[:, t : t + 1], cache_a)
        lb, cache_b = runner.decode(other[:, t : t + 1], pos[:, t : t + 1], cache_b)
        assert rel_err(la, lb) <= 1e-6
