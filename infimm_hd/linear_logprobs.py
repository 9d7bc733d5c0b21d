"""Per-token log-probabilities and entropies of an LM head's logits, in row chunks, without the (N, V) logits.

Why by hand: RL objectives score every sampled response token under the policy (with gradient) and under the reference
(without). The usual path writes the (N, V) logits, a float32 copy, the log-sum-exp and softmax temporaries and, in
backward, a float32 (N, V) gradient: 32 responses x 256 tokens x a 32k vocabulary is 1 GB per float32 tensor, 5 GB
with a 152k one (Qwen2). Liger-Kernel's fused GRPO loss avoids this with Triton (CUDA only); nothing in PyTorch or
transformers does. Unlike the summed cross-entropy (`linear_cross_entropy`, whose gradient can be formed in forward
because its upstream gradient is one scalar), each token's log-prob here gets its own upstream gradient from a
non-linear RL loss (ratios, clipping), known only in backward; so backward recomputes each chunk's logits from the
saved hidden rows (one extra head matmul per chunk) rather than keeping them. Only one (C, V) block exists at a time.

Numerics follow the usual path under autocast: logits from a compute-dtype matmul, everything after in float32 (the
temperature divides the float32 logits), the logits' gradient rounded to the compute dtype for the two backward
matmuls; the weight gradient is summed over chunks in float32.

Shape legend: N rows, H hidden size, V vocabulary, C rows per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .linear_cross_entropy import compute_dtype, rows_per_chunk

# -- from materialised logits (heads that are not a plain linear; the reference maths, tested against TRL) -------


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probabilities (B, T) in float32 of `tokens` (B, T) under `logits` (B, T, V).

    The logits must already be aligned: `logits[:, t]` is the distribution that produced `tokens[:, t]`. For a causal LM
    run on `prompt + response` with the response starting at position P, that is `logits[:, P - 1 : -1]`. `temperature`
    divides the logits, so the log-probs are those of the distribution that was sampled (TRL does the same).
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    # log_softmax(x)_i = x_i - logsumexp(x), without materialising the full (B, T, V) log-softmax.
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (B, T) in nats, float32, of the categorical distributions `logits` (B, T, V)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


# -- chunked from the hidden states --------------------------------------------------------------------------------


class _ChunkedLinearLogprobs(torch.autograd.Function):
    """(log p(target), entropy) per row of softmax(hidden @ weight.T / temperature); entropy without gradient."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float, chunk: int):
        # hidden (N, H) and weight (V, H) in the compute dtype; targets (N,) int64, all valid.
        num_rows = hidden.shape[0]
        logp = torch.empty(num_rows, dtype=torch.float32, device=hidden.device)  # (N,)
        entropy = torch.empty_like(logp)  # (N,)
        lse = torch.empty_like(logp)  # (N,) log-sum-exp of the scaled logits, for backward
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, num_rows, chunk):
                rows = slice(start, min(start + chunk, num_rows))
                logits = (hidden[rows] @ weight.T).float()  # (C, V) float32 from a compute-dtype matmul
                if temperature != 1.0:
                    logits.div_(temperature)
                row_lse = torch.logsumexp(logits, dim=1)  # (C,)
                lse[rows] = row_lse
                logp[rows] = logits.gather(1, targets[rows, None]).squeeze(1) - row_lse
                probs = (logits - row_lse[:, None]).exp_()  # (C, V)
                entropy[rows] = row_lse - (probs * logits).sum(dim=1)  # -sum p log p = lse - sum p x
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, grad_entropy: torch.Tensor | None):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None  # (N, H)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None  # (V, H)
        scale = grad_logp.float() / ctx.temperature  # (N,): d logp / d logits = (one_hot - softmax) / T
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], ctx.chunk):
                rows = slice(start, min(start + ctx.chunk, hidden.shape[0]))
                h, t, g = hidden[rows], targets[rows], scale[rows]  # (C, H), (C,), (C,)
                logits = (h @ weight.T).float()  # (C, V): recomputed, as in forward
                if ctx.temperature != 1.0:
                    logits.div_(ctx.temperature)
                grad_logits = logits.sub_(lse[rows, None]).exp_().mul_(-g[:, None])  # (C, V): -g * softmax
                grad_logits[torch.arange(len(t), device=t.device), t] += g
                grad_logits = grad_logits.to(hidden.dtype)  # rounded as autograd rounds it
                if need_hidden:
                    torch.mm(grad_logits, weight, out=grad_hidden[rows])  # (C, H)
                if need_weight:
                    grad_weight += grad_logits.T @ h  # (V, H): one rounding per chunk, summed in float32
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (..., H), weight (V, H) of a bias-free LM head, targets (...) token ids -> (log-probs (...) float32 with
    gradient, entropies (...) float32 without), of softmax(hidden @ weight.T / temperature).

    Equals `log_softmax(F.linear(hidden, weight).float() / temperature).gather(targets)` and its entropy (within the
    rounding of the weight gradient's chunk sums), with the memory of one chunk of logits instead of all of them.
    """
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden (..., {hidden.shape[-1]}) does not match an LM head weight of shape {weight.shape}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} do not match hidden rows {tuple(hidden.shape[:-1])}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab = weight.shape[0]
    flat_targets = targets.reshape(-1).long()  # (N,)
    if bool(((flat_targets < 0) | (flat_targets >= vocab)).any()):
        raise ValueError(f"targets outside the vocabulary [0, {vocab})")
    dtype = compute_dtype(hidden, weight)
    rows, weight = hidden.reshape(-1, hidden.shape[-1]).to(dtype), weight.to(dtype)  # (N, H), (V, H)
    if not torch.is_grad_enabled():  # autograd.Function sees requires_grad even under no_grad: keep nothing
        rows, weight = rows.detach(), weight.detach()
    logp, entropy = _ChunkedLinearLogprobs.apply(
        rows, weight, flat_targets, float(temperature), chunk_rows or rows_per_chunk(vocab)
    )
    return logp.view(targets.shape), entropy.view(targets.shape)
