"""The maths of direct RLHF (RLOO and PPO) as pure tensor functions, plus the KL-coefficient controllers.

Shape legend:
    B  responses in the batch (for RLOO: P prompts x k samples, the k samples of a prompt adjacent: row = p * k + i)
    T  response positions (right-padded)
    V  vocabulary
    mask (B, T): True on response tokens up to and including EOS, False on padding. A response that hit the length cap
        without EOS is all True. Everything here ignores masked-out positions, whatever they hold (even inf/nan).

The formulas follow `shared/design/objectives.md` (C.4). Where it is silent this module follows TRL (the RLOO trainer of
TRL 1.16 and the PPO trainer it removed) and the PPO / RLOO papers; each such choice is stated where it is made.
Losses come back as a *sum* plus what it sums over (`LossSum`), the convention of `ObjectiveOutput`: the training loop
divides by the count of the whole optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..linear_logprobs import entropy_from_logits, logprobs_of  # noqa: F401 - part of this module's maths

KLEstimator = Literal["k1", "k2", "k3"]


@dataclass
class LossSum:
    """A loss summed over `count` units (tokens, or sequences for the sequence-level RLOO loss) and its metrics.

    Pass `loss_sum` and `count` on as `ObjectiveOutput(loss_sum, num_tokens=count)`. Metrics are masked means over this
    micro-batch, as Python floats, with the same keys on every call.
    """

    loss_sum: torch.Tensor
    count: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# Masked reductions


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` where `mask` is true (over `dim`, or everything). Uses `where`, so padding holding inf/nan is safe."""
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is true; 0 where there are none (an empty mask is not an error)."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the masked positions (one scalar); Bessel-corrected by default, as TRL's `masked_var`."""
    count = mask.bool().sum()
    if count < 2:
        raise ValueError(f"the variance needs at least 2 unmasked values, got {int(count)}")
    centered = x - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    return var * count / (count - 1) if unbiased else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked positions (unbiased var, TRL's convention); 0 on padding.

    `shift_mean=False` keeps the mean and only rescales the spread (TRL's choice for whitening PPO rewards).
    """
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros((), dtype=whitened.dtype, device=whitened.device))


# ----------------------------------------------------------------------------------------------------------------------
# Log-probabilities, entropy (`linear_logprobs`, where the model's scoring path uses them too), KL


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp - ref_logp: unbiased for KL(pi || ref) on samples of pi, but per token it can be negative.

    Used *in the reward* by PPO and RLOO (TRL's default for both, the RLOO paper's choice, OpenRLHF's default): summed
    over a sequence it is exactly the sequence's log-ratio, so the penalised reward is the KL-regularised objective.
    """
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2: >= 0, low variance, biased. The "approx KL" PPO logs between the old and new
    policy (0.5 * mean((logp - logp_old)^2), as TRL's PPO), also usable as a penalty."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = exp(ref_logp - logp) (Schulman, "Approximating KL divergence"): unbiased for
    KL(pi || ref) on samples of pi, always >= 0, low variance.

    Used *in the loss* by GRPO (`beta * k3` per token, gradient flowing through logp), optionally in PPO's reward
    (TRL's `kl_estimator="k3"`), and as the KL(old || new) diagnostic of a PPO update.
    """
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """The per-token KL estimate (B, T) named by `estimator` ("k1" | "k2" | "k3"); see those functions."""
    estimators = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
    if estimator not in estimators:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(estimators)}")
    return estimators[estimator](logp, ref_logp)


# ----------------------------------------------------------------------------------------------------------------------
# KL coefficient controllers


class FixedKLController:
    """A constant KL coefficient beta (TRL's default, 0.05)."""

    def __init__(self, kl_coef: float = 0.05):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019 (and InstructGPT, TRL): steer beta so the KL to the reference tracks `target`.

    `beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)`: too much KL raises beta, too little
    lowers it, by at most 20% per `horizon` samples.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got target={target}, horizon={horizon}")
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """`current_kl`: the batch mean of each response's summed per-token KL (the units of `target`); `n_steps`: how
        many responses that batch held (Ziegler's and TRL's unit). Returns the new beta."""
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


# ----------------------------------------------------------------------------------------------------------------------
# RLOO (Ahmadian et al. 2024; TRL RLOOTrainer)


def kl_penalized_scores(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """RLOO's sequence reward r_i = score_i - beta * sum_t KL_t (B,), from scores (B,) and per-token KL (B, T).

    The KL is summed, not averaged, over the response: the KL of the whole sequence, as in TRL's RLOO and the paper.
    """
    return scores.float() - beta * masked_sum(kl.float(), mask, dim=1)


def leave_one_out_baseline(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """b_i = mean_{j != i} r_j over the other k - 1 samples of the same prompt (B,), rewards (B,) grouped by k."""
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt for a leave-one-out baseline, got k={k}")
    if rewards.shape[0] % k:
        raise ValueError(f"batch of {rewards.shape[0]} responses is not a whole number of groups of k={k}")
    grouped = rewards.view(-1, k)  # (P, k)
    return ((grouped.sum(1, keepdim=True) - grouped) / (k - 1)).view(-1)


def rloo_advantages(rewards: torch.Tensor, k: int, whiten: bool = False) -> torch.Tensor:
    """A_i = r_i - b_i (B,) from KL-penalised sequence rewards (B,) in groups of k.

    `whiten=True` standardises the advantages over the batch (TRL's `normalize_advantages`, default off, as there). It
    uses `masked_whiten` (unbiased std, eps inside the sqrt) where TRL's RLOO divides by (std + 1e-4): equal up to eps.
    """
    advantages = rewards - leave_one_out_baseline(rewards, k)
    if whiten:
        advantages = masked_whiten(advantages, torch.ones_like(advantages, dtype=torch.bool))
    return advantages


def rloo_policy_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    level: Literal["sequence", "token"] = "sequence",
) -> LossSum:
    """The RLOO policy-gradient loss from per-token log-probs (B, T) under the current policy and advantages (B,).

    On-policy (`old_logp=None`) it is REINFORCE: loss_sum = sum_i -(A_i * sum_t logp_{i,t}). With `old_logp` (B, T) from
    the rollout policy (several updates per rollout) it is the clipped surrogate -min(rho A, clip(rho, 1 +- eps) A); at
    rho = 1 both have the same gradient.

    `level` picks the unit the loop averages over and, with `old_logp`, where the ratio lives:
    - "sequence" (default): count = B, i.e. the mean over sequences of -(A_i * sum_t logp). The RLOO paper treats the
      whole response as one action, and this is the unbiased REINFORCE estimator of the sequence-level objective; TRL's
      RLOO uses the sequence ratio rho_i = exp(sum_t (logp - old_logp)).
    - "token": the same sum divided by the number of response tokens (count = mask.sum()), with a per-token ratio, as
      GRPO/DAPO's token-level normalisation. Each token weighs the same, so long responses dominate and a batch of short
      ones gets a larger step; useful when response lengths vary a lot.
    """
    mask = mask.bool()
    advantages = advantages.detach().float()
    logp = logp.float()
    if level not in ("sequence", "token"):
        raise ValueError(f"level must be 'sequence' or 'token', got {level!r}")
    count = torch.tensor(logp.shape[0], device=logp.device) if level == "sequence" else mask.sum()
    if old_logp is None:
        loss_sum = -(advantages * masked_sum(logp, mask, dim=1)).sum()
        return LossSum(loss_sum, count, {"policy/clip_frac": 0.0})

    if level == "sequence":
        log_ratio = masked_sum(logp - old_logp.float(), mask, dim=1)  # (B,)
        weight = torch.ones_like(log_ratio, dtype=torch.bool)
        adv = advantages
    else:
        log_ratio = torch.where(mask, logp - old_logp.float(), 0.0)  # (B, T)
        weight = mask
        adv = advantages[:, None]
    ratio = log_ratio.exp()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    loss_sum = masked_sum(torch.max(unclipped, clipped), weight)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).float(), weight).item()
    return LossSum(loss_sum, count, {"policy/clip_frac": clip_frac})


# ----------------------------------------------------------------------------------------------------------------------
# PPO (Schulman et al. 2017; Ziegler et al. 2019; TRL's former PPOTrainer)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index (B,) of the last True of each row of `mask` (B, T); an all-False row is an error."""
    mask = mask.bool()
    if not mask.any(1).all():
        raise ValueError("every response needs at least one token (a row of the response mask is all False)")
    positions = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask, positions, -1).max(1).values


def ppo_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """Shaped per-token rewards (B, T): r_t = -beta * KL_t on every response token, plus the score (B,) on the last one.

    The score lands on the last response token (the EOS, or the last token of a truncated response), as the design notes
    say. TRL's PPO put it one position later; ours keeps it where the episode ends. 0 on padding.
    """
    mask = mask.bool()
    rewards = torch.where(mask, -beta * kl.float(), 0.0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.float()
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), right to left: (advantages, returns), each (B, T).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, with V and A taken as 0 after the
    last response token: the episode ends there, also when it was cut at the length cap (the usual LM-RLHF choice, as
    TRL). Returns G_t = A_t + V_t are the value targets. Both are 0 on padding. Defaults gamma=1, lam=0.95 (C.4).
    """
    mask = mask.bool()
    rewards = torch.where(mask, rewards.float(), 0.0)
    values = torch.where(mask, values.float(), 0.0)
    live = mask.float()
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * live[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    returns = torch.where(mask, advantages + values, 0.0)
    return advantages, returns


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    entropy: torch.Tensor | None = None,
) -> LossSum:
    """PPO's clipped surrogate summed over response tokens: sum_t max(-A_t rho_t, -A_t clip(rho_t, 1 +- eps)).

    logp (B, T) under the current policy, old_logp (B, T) and advantages (B, T) from the rollout, rho = exp(logp -
    old_logp). count = response tokens, so the loop's division gives TRL's masked mean over all tokens of the step.
    Metrics: `policy/clip_frac` (tokens where the clipped term is the active one), `policy/approx_kl`
    (0.5 * mean (logp - old_logp)^2, TRL's), `policy/approx_kl_k3` (k3 estimate of KL(old || new)), `policy/ratio`,
    and `policy/entropy` when `entropy` (B, T) is given.
    """
    mask = mask.bool()
    advantages = torch.where(mask, advantages.detach().float(), 0.0)
    log_ratio = torch.where(mask, logp.float() - old_logp.float(), 0.0)  # 0 on padding, so exp never overflows there
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    loss_sum = masked_sum(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {
            "policy/clip_frac": masked_mean((clipped > unclipped).float(), mask).item(),
            "policy/approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "policy/approx_kl_k3": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).item(),
            "policy/ratio": masked_mean(ratio, mask).item(),
        }
        if entropy is not None:
            metrics["policy/entropy"] = masked_mean(entropy.float(), mask).item()
    return LossSum(loss_sum, mask.sum(), metrics)


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> LossSum:
    """PPO2's clipped value loss summed over response tokens: 0.5 * max((V - G)^2, (clip(V, V_old +- eps) - G)^2).

    values (B, T) from the current value head, old_values and returns (B, T) from the rollout. The 0.5 and the max of
    the two squared errors are TRL's / OpenAI baselines'. Metric `value/clip_frac`: tokens where the clipped error is
    the larger one. Combine as `policy.loss_sum + vf_coef * value.loss_sum` (same count).
    """
    mask = mask.bool()
    values = torch.where(mask, values.float(), 0.0)  # zero the padding first: no inf/nan reaches the backward pass
    old_values = torch.where(mask, old_values.detach().float(), 0.0)
    returns = torch.where(mask, returns.detach().float(), 0.0)
    clipped_values = torch.max(torch.min(values, old_values + clip_eps), old_values - clip_eps)
    err_unclipped = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss_sum = 0.5 * masked_sum(torch.max(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        metrics = {"value/clip_frac": masked_mean((err_clipped > err_unclipped).float(), mask).item()}
    return LossSum(loss_sum, mask.sum(), metrics)
