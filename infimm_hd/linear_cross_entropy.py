"""Cross-entropy of an LM head's logits, computed in row chunks without ever holding the (N, V) logits.

Why by hand: the usual path (`lm_head(h)` -> `.float()` -> `cross_entropy`) writes the (N, V) logits, their float32
copy, the log-softmax and, in backward, a zero-filled float32 gradient and its bf16 copy: five (N, V) tensors, 1.4 GB
for 2,000 tokens of a 49k vocabulary, and a quarter of a CPU stage-4 step spent streaming them through memory
(`benchmarks/bench_mfu_stage4.py`). Liger-Kernel and Apple's cut-cross-entropy fuse this with Triton kernels (CUDA
only); nothing in PyTorch or transformers does it on CPU. This is the same idea in plain PyTorch ops, for every
device: the rows go through in chunks, and while a chunk's softmax is at hand its gradients with respect to the hidden
rows and the head's weight are computed, so only one (chunk, V) block of logits exists at a time. The backward then
only scales the stored gradients by the incoming one.

Numerics follow the usual path under autocast: the logits come out of the matmul in the compute dtype (bf16 under
autocast) and everything after (log-sum-exp, softmax, the loss) is float32; the logits' gradient is rounded to the
compute dtype for the two backward matmuls, as autograd would. The weight gradient is summed over chunks in float32.

Shape legend: N rows (scored tokens), H hidden size, V vocabulary, C rows per chunk.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100

# Rows per chunk are chosen so that one chunk's float32 logits take about this many bytes: small enough to bound
# memory (64 MiB whatever the batch), large enough that the (V, C) x (C, H) weight-gradient matmul stays efficient.
CHUNK_BYTES = 64 * 2**20


def rows_per_chunk(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many rows of float32 logits fit in `chunk_bytes` (at least 1).

    >>> rows_per_chunk(49152)
    341
    """
    return max(1, chunk_bytes // (4 * vocab_size))


def forward_peak_bytes(num_rows: int, vocab_size: int, hidden_size: int, element_size: int) -> int:
    """The most bytes the loss's forward holds at once beyond its inputs and what it saves, for planners.

    Two chunks of logits overlap: a chunk's buffers are still bound when the next chunk's matmul lands. Per logit,
    float32 compute keeps one float32 buffer (the matmul's output is the softmax and its gradient, in place); a
    16-bit compute dtype keeps the float32 copy and the 16-bit gradient (6 bytes), and the next chunk's 16-bit
    matmul output before its float32 copy. The scored rows are gathered into an (N, H) copy, and the (N, H) gradient
    it saves is allocated up front (counted here once more as the gathered rows' transient twin).
    """
    chunk = rows_per_chunk(vocab_size)
    first = min(num_rows, chunk)
    second = min(max(num_rows - chunk, 0), chunk)
    per_logit = 4 if element_size == 4 else 4 + element_size
    return per_logit * vocab_size * (first + second) + 2 * num_rows * hidden_size * element_size


def compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype `F.linear(hidden, weight)` would compute in here: autocast's when it is on, else the promoted one."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets` (every target valid), in chunks of rows."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int):
        # hidden (N, H) and weight (V, H) already in the compute dtype; targets (N,) int64, all valid.
        need_hidden_grad, need_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        num_rows = hidden.shape[0]
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden_grad else None  # (N, H)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight_grad else None  # (V, H)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, num_rows, chunk_rows):
                rows = slice(start, min(start + chunk_rows, num_rows))
                h, t = hidden[rows], targets[rows]  # (C, H), (C,)
                logits = (h @ weight.T).float()  # (C, V) float32, from a compute-dtype matmul
                target_logit = logits.gather(1, t[:, None])  # (C, 1)
                # One exp pass serves both the loss and its gradient (logsumexp then softmax would take two).
                row_max = logits.amax(dim=1, keepdim=True)  # (C, 1)
                exps = logits.sub_(row_max).exp_()  # (C, V) in the logits' buffer
                exp_sum = exps.sum(dim=1, keepdim=True)  # (C, 1)
                loss_sum += (row_max + exp_sum.log() - target_logit).sum()
                if not (need_hidden_grad or need_weight_grad):
                    continue
                # d(loss_sum)/d(logits) = softmax - one_hot(target), built in place.
                grad_logits = exps.div_(exp_sum)  # (C, V) float32 softmax
                grad_logits[torch.arange(len(t), device=t.device), t] -= 1.0
                grad_logits = grad_logits.to(hidden.dtype)  # (C, V), rounded as autograd rounds it
                if need_hidden_grad:
                    torch.mm(grad_logits, weight, out=grad_hidden[rows])  # (C, H)
                if need_weight_grad:
                    grad_weight += grad_logits.T @ h  # (V, H): one rounding per chunk, summed in float32
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss_sum

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)  # rounded once, as autograd would
        return grad_hidden, grad_weight, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (..., H), weight (V, H) of a bias-free LM head, targets (...) with `ignore_index` on unscored rows ->
    (summed float32 loss, number of scored rows).

    Equals `F.cross_entropy(F.linear(hidden, weight).float().flatten(0, -2), targets.flatten(), reduction="sum")`
    (within the rounding of the weight gradient's chunk sums), with the memory of one chunk of logits instead of all.
    Unscored rows cost nothing: they are dropped before the head.
    """
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden (..., {hidden.shape[-1]}) does not match an LM head weight of shape {weight.shape}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} do not match hidden rows {tuple(hidden.shape[:-1])}")
    scored = targets != ignore_index  # (...)
    rows = hidden[scored]  # (N, H)
    row_targets = targets[scored]  # (N,)
    num_scored = scored.sum()
    if rows.shape[0] == 0:  # keep the graph connected (a zero that still backpropagates), as cross_entropy would
        return hidden.sum() * 0.0 + weight.sum() * 0.0, num_scored
    vocab = weight.shape[0]
    if bool(((row_targets < 0) | (row_targets >= vocab)).any()):
        raise ValueError(f"targets outside the vocabulary [0, {vocab}) other than ignore_index={ignore_index}")
    dtype = compute_dtype(hidden, weight)
    rows, weight = rows.to(dtype), weight.to(dtype)
    if not torch.is_grad_enabled():  # autograd.Function sees requires_grad even under no_grad: skip the gradients
        rows, weight = rows.detach(), weight.detach()
    loss_sum = _ChunkedLinearCrossEntropy.apply(rows, weight, row_targets, chunk_rows or rows_per_chunk(vocab))
    return loss_sum, num_scored
