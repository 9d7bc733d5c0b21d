"""The chunked LM head + cross-entropy equals `F.cross_entropy(F.linear(...))` and never holds the full logits."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from infimm_hd import linear_cross_entropy as lce_module
from infimm_hd.linear_cross_entropy import linear_cross_entropy

N, H, V = 37, 16, 53  # rows not a multiple of any chunk size below


def problem(seed: int = 0, ignored: int = 5):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g).mul(0.5).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.randperm(N, generator=g)[:ignored]] = -100
    return hidden, weight, targets


def reference(hidden, weight, targets):
    logits = F.linear(hidden, weight).float()  # (N, V): what the usual path materialises
    return F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")


def test_doctests():
    assert doctest.testmod(lce_module).failed == 0


@pytest.mark.parametrize("chunk_rows", [1, 5, 32, 1000])
def test_float32_loss_and_gradients_equal_the_materialised_logits(chunk_rows):
    hidden, weight, targets = problem()
    loss, count = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    got = torch.autograd.grad(loss, [hidden, weight])
    want_loss = reference(hidden, weight, targets)
    want = torch.autograd.grad(want_loss, [hidden, weight])
    assert int(count) == int((targets != -100).sum())
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6, msg="hidden gradient")
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6, msg="weight gradient")
    assert torch.all(got[0][targets == -100] == 0), "an ignored row got a gradient"


def test_bf16_autocast_matches_the_autocast_path():
    """Under autocast the logits come from a bf16 matmul and the loss is float32, as `lm_head(h).float()` does; the
    gradients reach the float32 leaves through the same casts (weight gradient: one bf16 rounding per chunk)."""
    hidden, weight, targets = problem(seed=1)
    scale = torch.tensor(0.37)  # an incoming gradient that is not 1 (the loop divides by the step's tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_rows=8)
        logits = F.linear(hidden, weight)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    want_loss = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
    got = torch.autograd.grad(loss * scale, [hidden, weight])
    want = torch.autograd.grad(want_loss * scale, [hidden, weight])
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-4)
    assert got[0].dtype == got[1].dtype == torch.float32
    for name, g, w in zip(["hidden", "weight"], got, want, strict=True):
        # Rounding order differs (the incoming gradient scales after the bf16 matmuls here, before them in autograd):
        # allow two bf16 steps (2^-7 relative) of the largest entry, nothing more.
        bf16_step = w.abs().max() * 2**-7
        assert (g - w).abs().max() <= 2 * bf16_step, f"{name} gradient off by {(g - w).abs().max()}"
        assert (g - w).abs().mean() <= bf16_step / 8, f"{name} gradient off on average"


@pytest.mark.parametrize("trainable", ["hidden", "weight", "none"])
def test_only_the_needed_gradients(trainable):
    hidden, weight, targets = problem(seed=2)
    hidden.requires_grad_(trainable == "hidden")
    weight.requires_grad_(trainable == "weight")
    loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_rows=7)
    torch.testing.assert_close(loss, reference(hidden, weight, targets), rtol=1e-6, atol=1e-5)
    if trainable == "none":
        assert not loss.requires_grad
        return
    leaf = hidden if trainable == "hidden" else weight
    (got,) = torch.autograd.grad(loss, [leaf])
    (want,) = torch.autograd.grad(reference(hidden, weight, targets), [leaf])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.matmuls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.matmuls += func in (torch.ops.aten.mm.default, torch.ops.aten.mm.out)
        return func(*args, **(kwargs or {}))


def test_no_grad_computes_the_loss_only():
    """Under `torch.no_grad()` (evaluation) the chunks run one matmul each, not the three of a training step."""
    hidden, weight, targets = problem(seed=4)
    with torch.no_grad(), OpCounter() as evaluation:
        loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_rows=8)
    with OpCounter() as training:
        linear_cross_entropy(hidden, weight, targets, chunk_rows=8)
    chunks = -(-int((targets != -100).sum()) // 8)
    assert evaluation.matmuls == chunks and training.matmuls == 3 * chunks
    torch.testing.assert_close(loss, reference(hidden, weight, targets).detach(), rtol=1e-6, atol=1e-5)


def test_no_scored_row_gives_a_zero_that_still_backpropagates():
    hidden, weight, _ = problem()
    loss, count = linear_cross_entropy(hidden, weight, torch.full((N,), -100))
    assert float(loss.detach()) == 0.0 and int(count) == 0
    grads = torch.autograd.grad(loss, [hidden, weight])
    assert all(torch.all(g == 0) for g in grads)


def test_batched_rows_and_bad_targets():
    hidden, weight, targets = problem(seed=3, ignored=0)
    batched, _ = linear_cross_entropy(hidden[:36].reshape(4, 9, H), weight, targets[:36].reshape(4, 9))
    flat, _ = linear_cross_entropy(hidden[:36], weight, targets[:36])
    torch.testing.assert_close(batched, flat)
    bad = targets.clone()
    bad[3] = V
    with pytest.raises(ValueError, match="outside the vocabulary"):
        linear_cross_entropy(hidden, weight, bad)
    with pytest.raises(ValueError, match="do not match hidden rows"):
        linear_cross_entropy(hidden, weight, targets[:-1])
    with pytest.raises(ValueError, match="does not match an LM head"):
        linear_cross_entropy(hidden, weight.T, targets)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_more_than_one_chunk_of_logits():
    """Forward and backward create no tensor larger than one (chunk, V) block or the (V, H) weight gradient; the
    usual path creates (N, V) ones."""
    rows, vocab, width, chunk = 400, 1000, 8, 16
    hidden = torch.randn(rows, width, requires_grad=True)
    weight = torch.randn(vocab, width, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,))
    with LargestTensor() as fused:
        loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk)
        loss.backward()
    with LargestTensor() as usual:
        reference(hidden, weight, targets).backward()
    assert usual.largest >= rows * vocab, "the reference should materialise the logits"
    assert fused.largest <= max(chunk * vocab, vocab * width, rows * width), (
        f"largest tensor {fused.largest} elements: more than one chunk of logits"
    )


@pytest.mark.parametrize(
    "rows, dtype",
    [(300, torch.float32), (638, torch.float32), (2000, torch.float32), (638, torch.bfloat16), (200, torch.bfloat16)],
)
def test_forward_peak_bytes_is_what_the_forward_holds(rows, dtype):
    """The planner's account of the loss's buffers (`forward_peak_bytes`, one or two chunks of logits overlapping)
    against the bytes the forward really holds above its inputs and what it saves (LiveTensorMemory), at one,
    two and six chunks (rows_per_chunk(49154) = 341), float32 and bf16: within 1%, never below."""
    from infimm_hd.planning.live_memory import LiveTensorMemory

    vocab, hidden_size = 49154, 64
    hidden = torch.randn(rows, hidden_size, dtype=dtype, requires_grad=True)
    weight = (torch.randn(vocab, hidden_size) * 0.02).to(dtype)
    targets = torch.randint(0, vocab, (rows,))
    with LiveTensorMemory([hidden, weight, targets]) as memory:
        loss, _ = linear_cross_entropy(hidden, weight, targets)
        saved = memory.live_bytes
    measured = memory.peak_bytes - saved
    planned = lce_module.forward_peak_bytes(rows, vocab, hidden_size, hidden.element_size())
    assert measured <= planned <= 1.01 * measured
