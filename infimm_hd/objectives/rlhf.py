"""Direct RLHF (RLOO and PPO) as an objective: rollouts, rewards, the KL to the starting model, clipped updates.

"Direct": applied to a model that had no SFT, the reference is the starting model (`SwappedReference`: only its
trainable tensors are kept, see `reference.py`). Per `loss()` call (one micro-batch of P prompts):

1. the ViT runs once on the prompts (`encode_media`, no grad, the unwrapped module);
2. k responses per prompt are sampled with the model's own `generate`, sharing that vision context;
3. a reward scores the decoded responses (rule, callable or reward model; missing-EOS penalty, normalisation);
4. a no-grad pass with the reference weights swapped in gives log pi_ref;
5. one graded forward of the (wrapped) model over prompt + response gives log pi and, for PPO, values;
6. RLOO: r_i = S_i - beta * sum_t KL_t, leave-one-out advantages, REINFORCE loss summed over sequences.
   PPO: r_t = -beta * KL_t (+ S on the last token), GAE, whitened advantages, clipped policy + vf_coef * value loss.

Epochs (`ppo_epochs`, TRL's ``num_ppo_epochs``): each rollout serves that many optimizer steps. The first is the step
that sampled it (ratio exactly 1: the rollout policy *is* the current one, so `clip_frac` and `approx_kl` are 0 there);
each later step re-scores the kept rollout (its samples, old log-probs, old values, advantages and returns, all fixed
at sampling time) under the updated weights, where the clipped surrogate and the clipped value loss do their work.
The training loop draws no data on those steps (`steps_per_batch`, see `training.loop`); an epoch is one optimizer
step over all micro-batches of the rollout (one minibatch per epoch). Kept rollouts are not checkpointed: checkpoints
fall between rollouts (the loop requires `save_every` and `max_steps` to be multiples of `ppo_epochs`), so a resumed
run samples exactly what the uninterrupted one sampled. With RLOO, later epochs use TRL's sequence-level ratio.

The maths is `rl_math` (tested against hand computations and TRL); this file only wires it to the model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from . import rl_math
from .base import ObjectiveOutput
from .reference import SwappedReference
from .rewards import (
    CallableReward,
    ExactMatchReward,
    NormalizedReward,
    RewardFunction,
    SequenceClassifierReward,
)
from .rollout import Rollout, prompts_from_batch, sample_responses
from .step_noise import MicroBatchCounter, current_rank, step_seed
from .value_head import ValueHead

METRIC_KEYS = (
    "reward/mean",  # the score the algorithm sees (after the EOS penalty and normalisation)
    "reward/std",
    "reward/raw_mean",  # the reward source's own score (e.g. exact-match accuracy)
    "kl",  # mean over responses of the summed per-token KL estimate to the reference
    "kl_coef",
    "clip_frac",
    "approx_kl",
    "entropy",  # mean per-token entropy of the policy on its responses (nats)
    "response_length",
    "eos_rate",
    "policy_loss",  # mean per count unit of this micro-batch
    "value_loss",
)


@dataclass
class KeptRollout:
    """What the later epochs of a rollout re-score, fixed when it was sampled (one micro-batch).

    old_logp (B, R): log pi of the responses under the sampling weights. advantages: (B, R) for PPO, (B,) for RLOO.
    old_values, returns (B, R): PPO only (None for RLOO). metrics: the rollout's own figures (rewards, KL to the
    reference, lengths, the KL coefficient it used), logged again with each epoch.
    """

    rollout: Rollout
    old_logp: torch.Tensor
    advantages: torch.Tensor
    old_values: torch.Tensor | None
    returns: torch.Tensor | None
    metrics: dict[str, float]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (FSDP2 does not wrap)."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model


def build_reward(reward: str | Callable | RewardFunction, partial_credit: float, batch_size: int) -> RewardFunction:
    """The reward source named by the `reward` option (see `RLHFObjective`)."""
    if callable(reward) and not isinstance(reward, str):
        return reward if isinstance(reward, RewardFunction) else CallableReward(reward)
    if reward == "exact-match":
        return ExactMatchReward(partial_credit=partial_credit)
    if Path(reward).is_dir():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(reward).eval()
        return SequenceClassifierReward(model, AutoTokenizer.from_pretrained(reward), batch_size=batch_size)
    if ":" in reward:
        module, _, name = reward.partition(":")
        return CallableReward(getattr(importlib.import_module(module), name))
    raise ValueError(
        f"rlhf: reward={reward!r} is not 'exact-match', a reward-model folder (train one with "
        "stages/train_reward_model.py), nor 'module:function'"
    )


class RLHFObjective:
    """Direct RLHF with RLOO or PPO (see the module docstring).

    algorithm: "rloo" (k samples per prompt, leave-one-out baseline, KL in the reward, no critic) or "ppo" (value
        head on the last hidden state, GAE, clipped policy and value losses, per-token KL penalty).
    k: samples per prompt (default 4 for RLOO, which needs >= 2; 1 for PPO).
    kl_coef, kl_estimator ("k1" | "k2" | "k3"): the KL penalty in the reward (TRL's 0.05 and k1).
    adaptive_kl, kl_target, kl_horizon: steer kl_coef towards `kl_target` nats per response (Ziegler et al.).
    max_new_tokens, temperature, top_p: sampling; log-probs are those of the temperature-scaled distribution.
    reward: "exact-match" (the record's answer; `partial_credit` when it appears as a word inside the response), a
        callable `fn(prompt, response, reference) -> float`, "module:function" naming one, or the folder of a Hugging
        Face sequence-classification reward model (e.g. from stages/train_reward_model.py) scoring prompt + response.
    missing_eos_penalty: subtracted from the score of responses that hit the length cap (None = none).
    normalize_rewards: None, "running" or "batch" standardisation of the scores (`NormalizedReward`).
    clip_range, clip_range_value, vf_coef, gamma, lam, whiten_advantages: PPO (TRL's defaults).
    ppo_epochs: optimizer steps per rollout (module docstring; default 1, OpenRLHF's; TRL used 4, the design notes
        suggest 1-4). `clip_range` bounds the ratio in RLOO's later epochs too.
    reference_offload: keep the reference snapshot on the CPU (copied to the device for each reference pass).
    tokenizer: decodes prompts and responses (the stage scripts pass the processor's).
    generation_prompt: appended to label-less ("prompt" record) rows before sampling (the house template's).
    seed: the samples of micro-batch m of step s on rank r depend only on (seed, s, r, m).

    Metrics: `METRIC_KEYS`, on every call. State (`state_dict`): the KL coefficient, the reward normaliser, the rollout
    count, as JSON. Hooks the training loop calls: `setup(model)` once, with the starting weights, and
    `trainable_module()` (the PPO value head, trained and checkpointed beside the model); it reads `steps_per_batch`
    (= `ppo_epochs`) and passes ``batch=None`` on the steps that re-score the kept rollout.
    """

    def __init__(
        self,
        algorithm: Literal["rloo", "ppo"] = "rloo",
        k: int | None = None,
        kl_coef: float = 0.05,
        kl_estimator: rl_math.KLEstimator = "k1",
        adaptive_kl: bool = False,
        kl_target: float = 6.0,
        kl_horizon: int = 10_000,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        reward: str | Callable = "exact-match",
        partial_credit: float = 0.0,
        reward_batch_size: int = 16,
        missing_eos_penalty: float | None = None,
        normalize_rewards: Literal["running", "batch"] | None = None,
        clip_range: float = 0.2,
        clip_range_value: float = 0.2,
        vf_coef: float = 0.1,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        ppo_epochs: int = 1,
        reference_offload: bool = False,
        tokenizer=None,
        generation_prompt: str = " ASSISTANT:",
        seed: int = 0,
    ):
        if algorithm not in ("rloo", "ppo"):
            raise ValueError(f"rlhf: algorithm must be 'rloo' or 'ppo', got {algorithm!r}")
        k = k if k is not None else (4 if algorithm == "rloo" else 1)
        least = 2 if algorithm == "rloo" else 1
        if not isinstance(k, int) or k < least:
            raise ValueError(f"rlhf: k must be an integer >= {least} for {algorithm}, got {k}")
        if kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"rlhf: kl_estimator must be k1, k2 or k3, got {kl_estimator!r}")
        if normalize_rewards not in (None, "running", "batch"):
            raise ValueError(f"rlhf: normalize_rewards must be null, 'running' or 'batch', got {normalize_rewards!r}")
        if tokenizer is None:
            raise ValueError("rlhf needs the tokenizer (the stage scripts pass processor.tokenizer)")
        if not isinstance(ppo_epochs, int) or isinstance(ppo_epochs, bool) or ppo_epochs < 1:
            raise ValueError(f"rlhf: ppo_epochs must be an integer >= 1, got {ppo_epochs!r}")
        if max_new_tokens < 1 or temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"rlhf: bad sampling settings {max_new_tokens=}, {temperature=}, {top_p=}")
        self.algorithm, self.k = algorithm, k
        self.kl_estimator = kl_estimator
        self.kl_controller = (
            rl_math.AdaptiveKLController(kl_coef, kl_target, kl_horizon)
            if adaptive_kl
            else rl_math.FixedKLController(kl_coef)
        )
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.clip_range, self.clip_range_value, self.vf_coef = clip_range, clip_range_value, vf_coef
        self.gamma, self.lam, self.whiten_advantages = gamma, lam, whiten_advantages
        self.steps_per_batch = ppo_epochs  # the training loop's name for it (see `training.loop.steps_per_batch`)
        self.kept: list[KeptRollout] = []  # this rollout's micro-batches, in order, while later epochs remain
        self.reference_offload = reference_offload
        self.tokenizer = tokenizer
        self.generation_prompt_ids = tokenizer(generation_prompt, add_special_tokens=False)["input_ids"]
        self.raw_reward = build_reward(reward, partial_credit, reward_batch_size)
        self.missing_eos_penalty = missing_eos_penalty
        # Its update/normalize are applied to the penalised scores below (the source is scored once per rollout).
        self.normalizer = NormalizedReward(self.raw_reward, mode=normalize_rewards) if normalize_rewards else None
        self.seed = seed
        self._micro = MicroBatchCounter()
        self.rollouts = 0
        self.reference: SwappedReference | None = None
        self.value_head: ValueHead | None = None

    # -- hooks the training loop calls ------------------------------------------------------------------------------
    def setup(self, model: nn.Module) -> None:
        """Snapshot the reference (the trainable tensors, now) and build the PPO value head. Call it once, while the
        model holds its starting weights and its trainable set is declared: `train()` does, before a resume."""
        model = unwrap(model)
        tower = getattr(model, "vision_tower", None)
        if tower is not None and any(p.requires_grad for p in tower.parameters()):
            raise ValueError(
                "rlhf computes the vision tokens once per prompt without gradients and shares them across the k "
                "samples; freeze the vision tower (stage 4 does)"
            )
        self.reference = SwappedReference(model, offload=self.reference_offload)
        if self.algorithm == "ppo" and self.value_head is None:
            self.value_head = ValueHead(model.config.text_config.hidden_size)

    def trainable_module(self) -> nn.Module | None:
        """Parameters this objective trains beside the model (the PPO value head), or None."""
        return self.value_head

    # -- one micro-batch --------------------------------------------------------------------------------------------
    def rollout(
        self, model: nn.Module, batch: dict[str, Any], step: int = 0, micro: int | None = None
    ) -> tuple[Rollout, list[str], list[str | None], list[str]]:
        """Prompts of `batch` -> k sampled responses each (vision context computed once): (rollout, prompt texts,
        references, response texts), the lists per response (B,). The samples depend only on (seed, step, rank,
        micro-batch of the step), so a resumed run draws what the uninterrupted one drew. `micro`: the micro-batch's
        index in the step, when the caller has counted it already."""
        micro = self._micro(step) if micro is None else micro
        raw = unwrap(model)
        prompts = prompts_from_batch(batch, self.tokenizer, self.generation_prompt_ids)
        context = None
        if "pixel_values" in batch:
            with torch.no_grad():
                context = raw.encode_media(
                    prompts.input_ids, batch["pixel_values"], batch["image_grids"], batch.get("image_sample_index")
                )
        stop_ids = raw.generation_config.eos_token_id
        stop_ids = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
        rollout = sample_responses(
            raw,
            prompts,
            context,
            self.k,
            self.max_new_tokens,
            self.temperature,
            self.top_p,
            self.tokenizer.pad_token_id,
            stop_ids,
            seed=step_seed("rlhf-rollout", self.seed, step, current_rank(), micro),
        )
        responses = self.tokenizer.batch_decode(rollout.response.tolist(), skip_special_tokens=True)
        repeat = [i // self.k for i in range(len(responses))]
        return rollout, [prompts.texts[i] for i in repeat], [prompts.references[i] for i in repeat], responses

    def score(
        self, prompts: list[str], responses: list[str], references: list[str | None], finished: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores the algorithm uses, the source's raw scores), each (B,) float32 on the CPU: the missing-EOS
        penalty (`MissingEOSPenalty`'s rule) then the normalisation, applied to one call of the reward source."""
        raw = self.raw_reward(prompts, responses, references, finished=finished).float()
        scores = raw
        if self.missing_eos_penalty is not None:
            scores = scores - self.missing_eos_penalty * (~finished.bool()).float()
        if self.normalizer is not None:
            if self.normalizer.mode == "running":
                self.normalizer.update(scores)
            scores = self.normalizer.normalize(scores)
        return scores, raw

    @torch.no_grad()
    def reference_logprobs(self, model: nn.Module, rollout: Rollout) -> torch.Tensor:
        """log pi_ref of the response tokens (B, R): the starting weights swapped in, eval mode, no grad."""
        if self.reference is None:
            raise RuntimeError("rlhf: call objective.setup(model) with the starting model first (train() does)")
        raw = unwrap(model)
        was_training = raw.training
        raw.eval()
        try:
            with self.reference.swapped_in(raw) as reference:
                return reference(**rollout.scoring_inputs(self.temperature)).token_logprobs  # (B, R)
        finally:
            raw.train(was_training)

    def loss(self, model: nn.Module, batch: dict[str, Any] | None, step: int) -> ObjectiveOutput:
        """A new rollout from `batch`, or (``batch=None``, a later epoch) the kept rollout of this micro-batch."""
        micro = self._micro(step)
        if batch is None:
            return self.loss_on_kept(model, micro)
        if micro == 0:
            self.kept.clear()  # a new rollout begins: the previous one has had all its epochs
        rollout, prompt_texts, references, responses = self.rollout(model, batch, step, micro)
        return self.loss_on_rollout(model, rollout, prompt_texts, references, responses)

    def loss_on_rollout(
        self,
        model: nn.Module,
        rollout: Rollout,
        prompt_texts: list[str],
        references: list[str | None],
        responses: list[str],
    ) -> ObjectiveOutput:
        """Score a rollout, run the reference and the graded pass, and return the RLOO / PPO loss (see the module
        docstring). The lists hold one entry per response (B,)."""
        mask = rollout.response_mask  # (B, R)
        if isinstance(self.raw_reward, SequenceClassifierReward):  # a reward model runs where the policy runs
            self.raw_reward.model.to(mask.device)
        scores, raw_scores = self.score(prompt_texts, responses, references, rollout.finished.cpu())
        scores = scores.to(mask.device)
        ref_logp = self.reference_logprobs(model, rollout)  # (B, R)

        logp, entropy, values = self._graded_pass(model, rollout)
        with torch.no_grad():
            kl = rl_math.kl_per_token(logp.detach(), ref_logp, self.kl_estimator)  # (B, R)
            seq_kl = rl_math.masked_sum(kl, mask, dim=1)  # (B,)
        beta = self.kl_controller.value
        returns = None
        if self.algorithm == "rloo":
            rewards = rl_math.kl_penalized_scores(scores, kl, mask, beta)  # (B,)
            advantages = rl_math.rloo_advantages(rewards, self.k)
        else:
            with torch.no_grad():
                token_rewards = rl_math.ppo_token_rewards(scores, kl, mask, beta)
                advantages, returns = rl_math.gae(token_rewards, values.detach(), mask, self.gamma, self.lam)
                if self.whiten_advantages and mask.sum() > 1:
                    advantages = rl_math.masked_whiten(advantages, mask)
        kept = KeptRollout(
            rollout,
            old_logp=logp.detach(),
            advantages=advantages,
            old_values=values.detach() if values is not None else None,
            returns=returns,
            metrics={
                "reward/mean": scores.mean().item(),
                "reward/std": scores.std(unbiased=False).item(),
                "reward/raw_mean": raw_scores.mean().item(),
                "kl": seq_kl.mean().item(),
                "kl_coef": beta,
                "response_length": mask.sum(1).float().mean().item(),
                "eos_rate": rollout.finished.float().mean().item(),
            },
        )
        if self.steps_per_batch > 1:
            self.kept.append(kept)
        mean_kl = self._global_mean(seq_kl.mean())
        self.kl_controller.update(mean_kl, n_steps=len(seq_kl))
        self.rollouts += 1
        return self._update_loss(kept, logp, entropy, values)

    def loss_on_kept(self, model: nn.Module, micro: int) -> ObjectiveOutput:
        """A later epoch: re-score kept rollout `micro` under the current weights (clipped against its old ones)."""
        if micro >= len(self.kept):
            raise RuntimeError(
                f"rlhf: no kept rollout for micro-batch {micro} of this step ({len(self.kept)} kept); later epochs "
                "re-score the micro-batches of the step that sampled them, with the same grad_accumulation"
            )
        kept = self.kept[micro]
        return self._update_loss(kept, *self._graded_pass(model, kept.rollout))

    def _graded_pass(
        self, model: nn.Module, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The one call of the (possibly wrapped) model per micro-batch, where DDP / FSDP hook in: (log pi (B, R) with
        gradient, entropy (B, R) without, values (B, R) with gradient for PPO, else None)."""
        out = model(**rollout.scoring_inputs(self.temperature), output_hidden_states=self.algorithm == "ppo")
        logp, entropy = out.token_logprobs, out.token_entropy  # (B, R) each, no (B, R, V) logits made
        values = None
        if self.algorithm == "ppo":
            hidden = out.hidden_states[-1][:, rollout.prompt_length - 1 : -1]  # (B, R, D): the state before token t
            values = self.value_head(hidden)  # (B, R)
        return logp, entropy, values

    def _update_loss(
        self, kept: KeptRollout, logp: torch.Tensor, entropy: torch.Tensor, values: torch.Tensor | None
    ) -> ObjectiveOutput:
        """The RLOO / PPO loss of the current log-probs (and values) against the kept rollout's; at its sampling step
        the old ones are these very values (ratio 1), at later epochs they are the sampling weights'."""
        mask = kept.rollout.response_mask
        if self.algorithm == "rloo":
            # One epoch: REINFORCE (the same gradient as the surrogate at ratio 1, and the loss the logs always
            # showed); several: the clipped sequence-ratio surrogate at every epoch, so the logged losses compare.
            old_logp = kept.old_logp if self.steps_per_batch > 1 else None
            policy = rl_math.rloo_policy_loss(logp, kept.advantages, mask, old_logp, self.clip_range)
            loss_sum, count, value_loss = policy.loss_sum, policy.count, 0.0
            with torch.no_grad():
                approx_kl = rl_math.masked_mean(0.5 * (logp.detach() - kept.old_logp) ** 2, mask).item()
        else:
            assert values is not None and kept.old_values is not None and kept.returns is not None
            policy = rl_math.ppo_policy_loss(logp, kept.old_logp, kept.advantages, mask, self.clip_range)
            value = rl_math.ppo_value_loss(values, kept.old_values, kept.returns, mask, self.clip_range_value)
            loss_sum, count = policy.loss_sum + self.vf_coef * value.loss_sum, policy.count
            value_loss = value.loss_sum.item() / max(int(count), 1)
            approx_kl = policy.metrics["policy/approx_kl"]
        metrics = kept.metrics | {
            "clip_frac": policy.metrics["policy/clip_frac"],
            "approx_kl": approx_kl,
            "entropy": rl_math.masked_mean(entropy, mask).item(),
            "policy_loss": policy.loss_sum.item() / max(int(policy.count), 1),
            "value_loss": value_loss,
        }
        return ObjectiveOutput(loss_sum=loss_sum, num_tokens=count, metrics={k: metrics[k] for k in METRIC_KEYS})

    @staticmethod
    def _global_mean(value: torch.Tensor) -> float:
        """The mean over ranks, so the adaptive KL coefficient stays identical on every rank."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= dist.get_world_size()
        return float(value)

    # -- resume -----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kl_controller": self.kl_controller.state_dict(), "rollouts": self.rollouts}
        if self.normalizer is not None:
            state["reward_normalizer"] = self.normalizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.rollouts = int(state["rollouts"])
        if self.normalizer is not None:
            if "reward_normalizer" not in state:
                raise ValueError("rlhf: the checkpoint has no reward-normaliser state but normalize_rewards is set")
            self.normalizer.load_state_dict(state["reward_normalizer"])
