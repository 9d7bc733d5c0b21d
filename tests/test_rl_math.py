"""RLHF maths (`infimm_hd.objectives.rl_math`): every formula against numbers worked out by hand (written in the
comments) or against a naive per-sample Python loop written here, masking, gradient direction, the KL controllers, and
TRL 1.16 where it still ships a callable reference (log-probs, entropy, RLOO's clipped loss)."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from infimm_hd.objectives.rl_math import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalized_scores,
    kl_per_token,
    last_token_index,
    leave_one_out_baseline,
    logprobs_of,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    ppo_policy_loss,
    ppo_token_rewards,
    ppo_value_loss,
    rloo_advantages,
    rloo_policy_loss,
)

NAN, INF = float("nan"), float("inf")


def close(actual, expected, what: str, atol: float = 1e-6) -> None:
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert torch.allclose(actual, expected, atol=atol, rtol=1e-6), (
        f"{what}: got {actual.tolist()}, want {expected.tolist()}"
    )


def random_mask(batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    """Right-padded response masks with lengths 1..length (B, T)."""
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    return torch.arange(length)[None, :] < lengths[:, None]


# ----------------------------------------------------------------------------------------------------------------------
# Masked reductions


def test_masked_reductions_by_hand_and_ignore_padding_even_if_inf_or_nan():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, NAN, INF]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # valid values 1..5: sum 15, mean 3, unbiased var (4 + 1 + 0 + 1 + 4) / 4 = 2.5
    close(masked_sum(x, mask), 15.0, "masked sum")
    close(masked_sum(x, mask, dim=1), [6.0, 9.0], "masked row sums")
    close(masked_mean(x, mask), 3.0, "masked mean")
    close(masked_mean(x, mask, dim=1), [2.0, 4.5], "masked row means")
    close(masked_var(x, mask), 2.5, "unbiased masked var")
    close(masked_var(x, mask, unbiased=False), 2.0, "biased masked var")
    s = math.sqrt(2.5 + 1e-8)
    close(masked_whiten(x, mask), [[-2 / s, -1 / s, 0, 0], [1 / s, 2 / s, 0, 0]], "whitened, 0 on padding")
    close(
        masked_whiten(x, mask, shift_mean=False),
        [[-2 / s + 3, -1 / s + 3, 3, 0], [1 / s + 3, 2 / s + 3, 0, 0]],
        "rescaled only",
    )
    close(masked_mean(x, torch.zeros_like(mask)), 0.0, "an empty mask averages to 0, not nan")
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))


# ----------------------------------------------------------------------------------------------------------------------
# Log-probs, entropy, KL


def test_logprobs_and_entropy_by_hand():
    # softmax([0, ln 2, ln 3]) = (1/6, 2/6, 3/6)
    logits = torch.log(torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])).to(torch.bfloat16)  # (1, 2, 3)
    tokens = torch.tensor([[2, 0]])
    lp = logprobs_of(logits, tokens)
    assert lp.dtype == torch.float32, "log-probs must be float32 whatever the logits' dtype"
    bf = logits.float()  # the bf16-rounded logits, to compare exactly
    probs = torch.softmax(bf, -1)[0, 0]
    close(lp, [[math.log(probs[2]), math.log(probs[0])]], "log-probs of the chosen tokens")
    close(lp, [[math.log(3 / 6), math.log(1 / 6)]], "log-probs vs 1/6, 2/6, 3/6", atol=1e-2)
    want_h = -(1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6) + 3 / 6 * math.log(3 / 6))  # 1.0114 nats
    ent = entropy_from_logits(logits)
    assert ent.dtype == torch.float32 and ent.shape == (1, 2)
    close(ent, [[want_h, want_h]], "entropy of (1/6, 1/3, 1/2)", atol=1e-2)
    # temperature 2 samples from softmax(logits / 2) = normalised sqrt(1, 2, 3)
    z = 1 + math.sqrt(2) + math.sqrt(3)
    close(
        logprobs_of(torch.log(torch.tensor([[[1.0, 2.0, 3.0]]])), torch.tensor([[1]]), temperature=2.0),
        [[math.log(math.sqrt(2) / z)]],
        "temperature divides the logits",
    )


def test_kl_estimators_by_hand_and_their_expectations_are_the_exact_kl():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    close(kl_k1(logp, ref), [math.log(2)], "k1 = log 2")  # 0.6931
    close(kl_k2(logp, ref), [0.5 * math.log(2) ** 2], "k2 = (log 2)^2 / 2")  # 0.2402
    close(kl_k3(logp, ref), [(0.5 - 1) - math.log(0.5)], "k3 = (r - 1) - log r, r = 0.25 / 0.5")  # 0.1931
    close(kl_per_token(logp, ref, "k3"), kl_k3(logp, ref), "kl_per_token dispatches")
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_per_token(logp, ref, "k4")

    # Over a whole categorical support, E_p[k1] = E_p[k3] = KL(p || q) exactly; k3 >= 0 pointwise, k1 is not.
    p = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist(), strict=True))
    close((p * kl_k1(p.log(), q.log())).sum(), exact, "E_p[k1] = KL")
    close((p * kl_k3(p.log(), q.log())).sum(), exact, "E_p[k3] = KL")
    assert (kl_k3(p.log(), q.log()) >= 0).all() and (kl_k1(p.log(), q.log()) < 0).any()


def test_logprobs_and_entropy_match_trl():
    trl_utils = pytest.importorskip("trl.trainer.utils", reason="TRL is an optional independent check")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 3
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    close(logprobs_of(logits, tokens), trl_utils.selective_log_softmax(logits, tokens), "log-probs vs TRL", 1e-5)
    close(entropy_from_logits(logits), trl_utils.entropy_from_logits(logits), "entropy vs TRL", 1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# RLOO


def test_rloo_rewards_baselines_and_advantages_by_hand():
    # r_i = score_i - beta * sum_t KL_t over the response tokens only: 1 - 0.1 * 0.75, 2 - 0.1 * 1.0
    kl = torch.tensor([[0.5, 0.25, 99.0], [1.0, NAN, INF]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(kl_penalized_scores(torch.tensor([1.0, 2.0]), kl, mask, beta=0.1), [0.925, 1.9], "KL-penalised reward")

    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # 2 prompts x k=3
    # b = mean of the other two: (2+6)/2, (1+6)/2, (1+2)/2 | (0+3)/2, (0+3)/2, (0+0)/2
    close(leave_one_out_baseline(rewards, 3), [4.0, 3.5, 1.5, 1.5, 1.5, 0.0], "leave-one-out baselines")
    adv = rloo_advantages(rewards, 3)
    close(adv, [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0], "advantages r - b")
    # mean 0, unbiased var (9 + 2.25 + 20.25 + 2.25 + 2.25 + 9) / 5 = 9, std 3
    close(rloo_advantages(rewards, 3, whiten=True), [-1.0, -0.5, 1.5, -0.5, -0.5, 1.0], "whitened", 1e-6)
    with pytest.raises(ValueError, match="k >= 2"):
        leave_one_out_baseline(rewards, 1)
    with pytest.raises(ValueError, match="whole number of groups"):
        leave_one_out_baseline(rewards, 4)


def test_rloo_advantages_match_an_explicit_loop():
    g = torch.Generator().manual_seed(1)
    k, prompts, length, beta = 4, 5, 7, 0.05
    scores = torch.randn(prompts * k, generator=g)
    logp, ref = -torch.rand(prompts * k, length, generator=g) * 3, -torch.rand(prompts * k, length, generator=g) * 3
    mask = random_mask(prompts * k, length, g)

    want = []
    for p in range(prompts):
        group = []
        for i in range(k):
            row = p * k + i
            kl_sum = sum(logp[row, t] - ref[row, t] for t in range(length) if mask[row, t])
            group.append(float(scores[row] - beta * kl_sum))
        for i in range(k):
            want.append(group[i] - sum(group[j] for j in range(k) if j != i) / (k - 1))

    rewards = kl_penalized_scores(scores, kl_per_token(logp, ref, "k1"), mask, beta)
    adv = rloo_advantages(rewards, k)
    close(adv, want, "RLOO advantages vs loop", 1e-5)
    close(adv.view(prompts, k).sum(1), torch.zeros(prompts), "each group's advantages sum to 0", 1e-5)


def test_rloo_policy_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -50.0], [-0.5, NAN, -INF]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([2.0, -1.0])
    # REINFORCE: -(2 * (-3)) - (-1 * (-0.5)) = 6 - 0.5
    seq = rloo_policy_loss(logp, adv, mask)
    close(seq.loss_sum, 5.5, "REINFORCE loss sum")
    assert int(seq.count) == 2, "sequence level averages over sequences"
    tok = rloo_policy_loss(logp, adv, mask, level="token")
    close(tok.loss_sum, 5.5, "token level: same sum")
    assert int(tok.count) == 3, "token level averages over the 3 response tokens"

    # Clipped, sequence ratio: rho_0 = 1.5 (A > 0): max(-3, -2.4) = -2.4 clipped; rho_1 = 0.9 (A < 0): max(0.9, 0.9)
    old = logp.clone()
    old[0, 0] -= math.log(1.5)
    old[1, 0] -= math.log(0.9)
    old[0, 2], old[1, 1] = 123.0, NAN  # padding: ignored
    clipped = rloo_policy_loss(logp, adv, mask, old_logp=old, clip_eps=0.2)
    close(clipped.loss_sum, -2.4 + 0.9, "clipped sequence-level loss")
    close(clipped.metrics["policy/clip_frac"], 0.5, "one of two sequences clipped")
    # Token level: ratios 1.5, 1 | 0.9: max(-3, -2.4) + max(-2, -2) + max(0.9, 0.9)
    clipped_tok = rloo_policy_loss(logp, adv, mask, old_logp=old, clip_eps=0.2, level="token")
    close(clipped_tok.loss_sum, -2.4 - 2.0 + 0.9, "clipped token-level loss")
    close(clipped_tok.metrics["policy/clip_frac"], 1 / 3, "one of three tokens clipped")


def test_rloo_clipped_loss_matches_trl_rloo_trainer():
    """TRL 1.16's `RLOOTrainer._compute_loss` run on a stand-in `self` that hands it our log-probs."""
    trl = pytest.importorskip("trl", minversion="1.16", reason="TRL is an optional independent check")
    g = torch.Generator().manual_seed(2)
    batch, length = 6, 5
    logp = -torch.rand(batch, length, generator=g) * 2
    old = logp + 0.3 * torch.randn(batch, length, generator=g)
    mask = random_mask(batch, length, g)
    adv = torch.randn(batch, generator=g)
    ident = lambda x, **_: x
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        aux_loss_enabled=False,
        epsilon_low=0.2,
        epsilon_high=0.2,
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(reduce=ident, gather=ident, gather_for_metrics=ident),
        _metrics={"train": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.zeros(batch, 1, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 1, dtype=torch.long),
        "completion_ids": torch.zeros(batch, length, dtype=torch.long),
        "completion_mask": mask.long(),
        "old_logps": (old * mask).sum(1),
        "advantages": adv,
    }
    want = trl.RLOOTrainer._compute_loss(fake, None, inputs)
    ours = rloo_policy_loss(logp, adv, mask, old_logp=old, clip_eps=0.2)
    close(ours.loss_sum / ours.count, want, "RLOO clipped sequence loss vs TRL", 1e-5)
    close(ours.metrics["policy/clip_frac"], fake._metrics["train"]["clip_ratio/region_mean"][0], "clip frac vs TRL")


# ----------------------------------------------------------------------------------------------------------------------
# PPO


def test_ppo_token_rewards_by_hand():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 9.0, NAN]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # -0.5 * KL on every response token, score on the last one: -0.15 + 1 and -0.2 + 2
    rewards = ppo_token_rewards(torch.tensor([1.0, 2.0]), kl, mask, beta=0.5)
    close(rewards, [[-0.05, -0.1, 0.85], [1.8, 0.0, 0.0]], "shaped rewards")
    close(last_token_index(mask), [2, 0], "last response token")
    with pytest.raises(ValueError, match="at least one token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 7.0, NAN]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, INF, 3.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # gamma 0.9, lam 0.5 (gamma * lam = 0.45), V after the last token = 0:
    # t=2: d = 1 - 0.7 = 0.3                          A2 = 0.3
    # t=1: d = 0.9 * 0.7 - 0.6 = 0.03                 A1 = 0.03 + 0.45 * 0.3 = 0.165
    # t=0: d = 0.9 * 0.6 - 0.5 = 0.04                 A0 = 0.04 + 0.45 * 0.165 = 0.11425
    # row 2 ends at t=0: d = 2 - 0.5 = 1.5            A0 = 1.5
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    close(adv, [[0.11425, 0.165, 0.3], [1.5, 0.0, 0.0]], "GAE advantages")
    close(ret, [[0.61425, 0.765, 1.0], [2.0, 0.0, 0.0]], "returns A + V")


def naive_gae(rewards, values, mask, gamma, lam):
    """GAE one sequence at a time over its own valid length."""
    adv = torch.zeros_like(rewards, dtype=torch.float64)
    for b in range(rewards.shape[0]):
        length = int(mask[b].sum())
        last = 0.0
        for t in reversed(range(length)):
            next_v = float(values[b, t + 1]) if t + 1 < length else 0.0
            delta = float(rewards[b, t]) + gamma * next_v - float(values[b, t])
            last = delta + gamma * lam * last
            adv[b, t] = last
    ret = torch.where(mask, adv + values.double(), 0.0)
    return adv, ret


def test_gae_matches_an_explicit_loop_and_is_monte_carlo_at_lambda_1():
    g = torch.Generator().manual_seed(3)
    batch, length = 6, 9
    mask = random_mask(batch, length, g)
    rewards = torch.where(mask, torch.randn(batch, length, generator=g), 1e6)  # junk on padding
    values = torch.where(mask, torch.randn(batch, length, generator=g), NAN)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.7), (0.99, 0.0)]:
        adv, ret = gae(rewards, values, mask, gamma, lam)
        want_adv, want_ret = naive_gae(rewards, values, mask, gamma, lam)
        close(adv, want_adv, f"GAE vs loop (gamma={gamma}, lam={lam})", 1e-5)
        close(ret, want_ret, f"returns vs loop (gamma={gamma}, lam={lam})", 1e-5)
    # gamma = lam = 1: returns are the rewards-to-go whatever the values
    _, ret = gae(rewards, values, mask, 1.0, 1.0)
    clean = torch.where(mask, rewards, 0.0)
    to_go = clean.flip(1).cumsum(1).flip(1)
    close(ret, torch.where(mask, to_go, 0.0), "lam = 1 returns = reward-to-go", 1e-4)


def test_ppo_policy_loss_by_hand():
    adv = torch.tensor([[1.0, -1.0, 2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    old = torch.tensor([[-1.0, -1.0, -1.0, NAN]])
    rho = [1.5, 0.5, 1.1]
    logp = old.clone()
    logp[0, :3] += torch.log(torch.tensor(rho))
    logp[0, 3] = 1e4  # padding: exp() of it would overflow if it were not masked
    entropy = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    out = ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2, entropy=entropy)
    # A=1, rho 1.5: max(-1.5, -1.2) = -1.2 (clipped) | A=-1, rho 0.5: max(0.5, 0.8) = 0.8 (clipped)
    # A=2, rho 1.1: max(-2.2, -2.2) = -2.2 (inside the clip range)
    close(out.loss_sum, -1.2 + 0.8 - 2.2, "clipped surrogate sum")
    assert int(out.count) == 3
    m = out.metrics
    close(m["policy/clip_frac"], 2 / 3, "clip fraction")
    close(m["policy/approx_kl"], sum(0.5 * math.log(r) ** 2 for r in rho) / 3, "0.5 * mean log-ratio^2")
    close(m["policy/approx_kl_k3"], sum(r - 1 - math.log(r) for r in rho) / 3, "k3 of KL(old || new)")
    close(m["policy/ratio"], sum(rho) / 3, "mean ratio")
    close(m["policy/entropy"], 2.0, "masked mean entropy")
    assert all(math.isfinite(v) for v in m.values())


def test_ppo_policy_loss_matches_an_explicit_loop():
    g = torch.Generator().manual_seed(4)
    batch, length, eps = 5, 6, 0.2
    mask = random_mask(batch, length, g)
    old = -torch.rand(batch, length, generator=g) * 3
    logp = old + 0.4 * torch.randn(batch, length, generator=g)
    adv = torch.randn(batch, length, generator=g)
    total, n, n_clip = 0.0, 0, 0
    for b in range(batch):
        for t in range(length):
            if not mask[b, t]:
                continue
            r = math.exp(float(logp[b, t] - old[b, t]))
            a = float(adv[b, t])
            surrogate = min(r * a, min(max(r, 1 - eps), 1 + eps) * a)  # PPO's pessimistic objective
            total += -surrogate
            n += 1
            n_clip += min(max(r, 1 - eps), 1 + eps) * a < r * a
    out = ppo_policy_loss(logp, old, adv, mask, clip_eps=eps)
    close(out.loss_sum, total, "PPO loss vs loop", 1e-5)
    assert int(out.count) == n
    close(out.metrics["policy/clip_frac"], n_clip / n, "clip fraction vs loop")


def test_ppo_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 5.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.0, NAN]])
    returns = torch.tensor([[2.0, 1.0, INF]])
    mask = torch.tensor([[1, 1, 0]])
    out = ppo_value_loss(values, old, returns, mask, clip_eps=0.2)
    # t0: (1 - 2)^2 = 1 vs (clip(1, 0.3, 0.7) - 2)^2 = 1.69 -> 1.69 (clipped); t1: 1 vs 1 -> 1
    close(out.loss_sum, 0.5 * (1.69 + 1.0), "clipped value loss")
    close(out.metrics["value/clip_frac"], 0.5, "value clip fraction")
    out.loss_sum.backward()
    # t0's active branch is the clipped value, constant in V: no gradient; t1: 0.5 * 2 * (0 - 1) = -1; padding: 0
    close(values.grad, [[0.0, -1.0, 0.0]], "value gradient")


# ----------------------------------------------------------------------------------------------------------------------
# Gradient direction: one SGD step on a toy logits tensor moves the sampled tokens' log-probs with the advantage's sign


@pytest.mark.parametrize("loss_kind", ["rloo", "rloo_token", "rloo_clipped", "ppo"])
def test_positive_advantage_raises_the_sampled_tokens_logprob(loss_kind):
    g = torch.Generator().manual_seed(5)
    batch, length, vocab = 4, 5, 7
    logits = torch.randn(batch, length, vocab, generator=g).requires_grad_()
    tokens = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    seq_adv = torch.tensor([1.0, -1.0, 2.0, -0.5])
    before = logprobs_of(logits, tokens).detach()

    logp = logprobs_of(logits, tokens)
    if loss_kind == "rloo":
        out = rloo_policy_loss(logp, seq_adv, mask)
    elif loss_kind == "rloo_token":
        out = rloo_policy_loss(logp, seq_adv, mask, level="token")
    elif loss_kind == "rloo_clipped":
        out = rloo_policy_loss(logp, seq_adv, mask, old_logp=before)
    else:
        out = ppo_policy_loss(logp, before, seq_adv[:, None].expand(batch, length), mask)
    (out.loss_sum / out.count).backward()
    with torch.no_grad():
        logits -= 0.1 * logits.grad
        change = masked_sum(logprobs_of(logits, tokens) - before, mask, dim=1)  # (B,)
    assert (change.sign() == seq_adv.sign()).all(), f"{loss_kind}: log-prob changes {change.tolist()} vs A {seq_adv}"
    assert (logits.grad[~mask.bool()] == 0).all(), f"{loss_kind}: padding positions must get no gradient"


def test_padding_contents_change_nothing():
    g = torch.Generator().manual_seed(6)
    batch, length = 4, 6
    mask = random_mask(batch, length, g)
    tensors = [torch.randn(batch, length, generator=g) for _ in range(5)]
    fill = [NAN, INF, -INF, 1e9, NAN]
    junk = [torch.where(mask, t, torch.full_like(t, v)) for t, v in zip(tensors, fill, strict=True)]
    outs = []
    for logp, old, adv, values, returns in [tensors, junk]:
        a, r = gae(adv, values, mask)
        outs.append(
            [
                ppo_policy_loss(logp, old, adv, mask).loss_sum,
                ppo_value_loss(values, old, returns, mask).loss_sum,
                a,
                r,
                ppo_token_rewards(adv[:, 0], old, mask, 0.1),
                rloo_policy_loss(logp, adv[:, 0], mask, old_logp=old).loss_sum,
                masked_whiten(adv, mask),
            ]
        )
    for i, (x, y) in enumerate(zip(*outs, strict=True)):
        assert torch.equal(x, y), f"output {i} depends on what the padding holds"

    # and no inf/nan leaks into the gradients: padding gets exactly 0
    logp, old, adv, values, returns = junk
    logp, values = logp.clone().requires_grad_(), values.clone().requires_grad_()
    loss = (
        ppo_policy_loss(logp, old, adv, mask).loss_sum
        + ppo_value_loss(values, old, returns, mask).loss_sum
        + rloo_policy_loss(logp, adv[:, 0], mask, old_logp=old).loss_sum
        + rloo_policy_loss(logp, adv[:, 0], mask).loss_sum
    )
    loss.backward()
    for name, grad in [("logp", logp.grad), ("values", values.grad)]:
        assert torch.isfinite(grad).all() and (grad[~mask] == 0).all(), f"{name} gradient on padding: {grad}"


# ----------------------------------------------------------------------------------------------------------------------
# KL controllers


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    # KL 12 = 2x target: error clipped to +0.2: 0.1 * (1 + 0.2 * 256 / 10000)
    close(ctl.update(12.0, 256), 0.1 * 1.00512, "too much KL raises beta")
    beta = ctl.value
    # KL 6.6: error +0.1
    close(ctl.update(6.6, 100), beta * (1 + 0.1 * 100 / 10_000), "proportional below the clip")
    beta = ctl.value
    assert ctl.update(3.0, 256) < beta, "too little KL lowers beta"
    beta = ctl.value
    assert ctl.update(6.0, 256) == pytest.approx(beta), "on target, beta stays"

    resumed = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.value == ctl.value and resumed.update(9.0, 10) == ctl.update(9.0, 10), "resume continues exactly"

    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 256) == 0.05 and fixed.state_dict() == {"value": 0.05}
