"""Chunked per-token log-probs and entropies equal log_softmax of the materialised logits, gradients included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_linear_cross_entropy import LargestTensor

from infimm_hd.linear_logprobs import linear_token_logprobs

B, R, H, V = 3, 13, 16, 53  # rows (39) not a multiple of any chunk size below


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, R, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g).mul(0.5).requires_grad_()
    targets = torch.randint(0, V, (B, R), generator=g)
    upstream = torch.randn(B, R, generator=g)  # an RL loss's per-token gradient: not uniform
    return hidden, weight, targets, upstream


def reference(hidden, weight, targets, temperature):
    logits = F.linear(hidden, weight).float() / temperature  # (B, R, V): what the usual path materialises
    logp_all = torch.log_softmax(logits, -1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(-1, targets[..., None]).squeeze(-1), entropy


@pytest.mark.parametrize(("chunk_rows", "temperature"), [(1, 1.0), (5, 0.7), (16, 1.0), (1000, 1.3)])
def test_float32_values_and_gradients_equal_the_materialised_logits(chunk_rows, temperature):
    hidden, weight, targets, upstream = problem()
    logp, entropy = linear_token_logprobs(hidden, weight, targets, temperature=temperature, chunk_rows=chunk_rows)
    want_logp, want_entropy = reference(hidden, weight, targets, temperature)
    torch.testing.assert_close(logp, want_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, want_entropy.detach(), rtol=1e-5, atol=1e-5)
    assert not entropy.requires_grad, "the entropy is a diagnostic: no gradient"
    got = torch.autograd.grad((logp * upstream).sum(), [hidden, weight])
    want = torch.autograd.grad((want_logp * upstream).sum(), [hidden, weight])
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6, msg="hidden gradient")
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6, msg="weight gradient")


def test_bf16_autocast_matches_the_autocast_path():
    hidden, weight, targets, upstream = problem(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, _ = linear_token_logprobs(hidden, weight, targets, chunk_rows=8)
        logits = F.linear(hidden, weight)
    assert logits.dtype == torch.bfloat16 and logp.dtype == torch.float32
    want_logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(logp, want_logp, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad((logp * upstream).sum(), [hidden, weight])
    want = torch.autograd.grad((want_logp * upstream).sum(), [hidden, weight])
    for a, b, name in zip(got, want, ("hidden", "weight"), strict=True):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2, msg=f"{name} gradient (bf16 rounding)")


def test_no_grad_keeps_nothing_and_only_needed_gradients_are_computed():
    hidden, weight, targets, _ = problem()
    with torch.no_grad():
        logp, _ = linear_token_logprobs(hidden, weight, targets)
    assert logp.grad_fn is None
    frozen = weight.detach()  # a frozen head: only the hidden rows need a gradient
    logp, _ = linear_token_logprobs(hidden, frozen, targets)
    (grad,) = torch.autograd.grad(logp.sum(), [hidden])
    assert grad.shape == hidden.shape and grad.abs().sum() > 0


def test_bad_inputs_are_clear_errors():
    hidden, weight, targets, _ = problem()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        linear_token_logprobs(hidden, weight, targets + V)
    with pytest.raises(ValueError, match="do not match hidden rows"):
        linear_token_logprobs(hidden, weight, targets[:, 1:])
    with pytest.raises(ValueError, match="temperature"):
        linear_token_logprobs(hidden, weight, targets, temperature=0.0)


def test_never_materialises_more_than_one_chunk_of_logits():
    """Forward and backward create no tensor larger than one (chunk, V) block or the (V, H) weight gradient; the
    usual path creates (N, V) ones."""
    rows, vocab, width, chunk = 400, 1000, 8, 16
    hidden = torch.randn(rows, width, requires_grad=True)
    weight = torch.randn(vocab, width, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,))
    upstream = torch.randn(rows)
    with LargestTensor() as fused:
        logp, _ = linear_token_logprobs(hidden, weight, targets, chunk_rows=chunk)
        (logp * upstream).sum().backward()
    with LargestTensor() as usual:
        (reference(hidden, weight, targets, 1.0)[0] * upstream).sum().backward()
    assert usual.largest >= rows * vocab, "the reference should materialise the logits"
    assert fused.largest <= max(chunk * vocab, vocab * width, rows * width), (
        f"largest tensor {fused.largest} elements: more than one chunk of logits"
    )
