"""The GPU code paths, checked on one device against CPU float32 (or float64) references and invariants.

    .venv/bin/pytest -q tests/test_cuda.py                            # CUDA when the machine has it, else CPU
    INFIMM_TEST_DEVICE=cuda .venv/bin/pytest -q tests/test_cuda.py    # CUDA or skip (benchmarks/gpu_checks.sh)

`INFIMM_TEST_DEVICE` picks the device ("cuda", "cuda:N" or "cpu"; by default CUDA when available, else CPU, so the
main test run on a CPU machine keeps this file's code exercised); with "cuda" and no GPU the module is skipped.
Random-weight tiny models only (the `tiny` preset: 8-layer Llama of width 64, 2-layer ViT of width 32), so nothing
here needs a download or the SmolLM2 file. On CPU the "device" and the reference run the same kernels, so
the comparisons there only prove the test code; the tolerances are for the GPU and each one says why it is that size.

Float32 comparisons run with TF32 off (the module fixture below): PyTorch enables TF32 for cuDNN convolutions by
default (the ViT's patch embedding), which would put ~1e-3 relative errors into "float32" GPU logits.

The flash-attention cross-attention path is only checked for its clear error when `flash-attn` is missing.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os

# PyTorch reads CUBLAS_WORKSPACE_CONFIG once, at the first cuBLAS call of the process (a static in
# `at::Context::alertCuBLASConfigNotDeterministic`), so the `deterministic=True` training run below would raise if
# only `training.loop.determinism` set it, after the earlier tests' matmuls: set it before any CUDA work.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import bare_llm_copy, make_image, randomize_gates  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

import infimm_hd  # noqa: E402
from infimm_hd.linear_cross_entropy import linear_cross_entropy  # noqa: E402
from infimm_hd.objectives import SFTObjective  # noqa: E402
from infimm_hd.training import checkpoint as ckpt  # noqa: E402
from infimm_hd.training.config import TrainConfig  # noqa: E402
from infimm_hd.training.optim import build_optimizer, param_groups  # noqa: E402
from infimm_hd.training.trainable import TrainableSpec, apply_trainable  # noqa: E402
from tests.helpers.standin_batches import StandInBatches  # noqa: E402

DEVICE = torch.device(os.environ.get("INFIMM_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
if DEVICE.type not in ("cuda", "cpu"):
    raise ValueError(f"INFIMM_TEST_DEVICE must be 'cuda' or 'cpu' (optionally 'cuda:N'), got {DEVICE}")
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip(
        f"INFIMM_TEST_DEVICE={DEVICE} but torch.cuda.is_available() is False; "
        "leave it unset or set it to cpu to run these checks on CPU",
        allow_module_level=True,
    )

pytestmark = pytest.mark.usefixtures("one_thread")  # the CPU side: tiny models are fastest on one thread

PROMPTS = ["Q: <image>what is in the picture? A:", "a longer question about <image> this one, please?", "only text"]
BF16_STEP = 2**-8  # relative spacing of bfloat16 (8 significant bits)


@pytest.fixture(autouse=True)
def ieee_float32():
    """Float32 means float32 on the GPU too: no TF32 in cuBLAS matmuls or cuDNN convolutions (restored after)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to(device: torch.device | str, batch: dict) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def tiny(gates: float | None = 1.0, seed: int = 0):
    """(CPU float32 tiny model in eval mode, processor); `gates` scales random gates (None: the zero init)."""
    model, processor = infimm_hd.build_model("tiny", seed=seed)
    if gates is not None:
        randomize_gates(model, scale=gates, seed=seed)
    return model, processor


def on_device(model, dtype: torch.dtype | None = None):
    """An independent copy of `model` on the test device (optionally cast)."""
    return copy.deepcopy(model).to(device=DEVICE, dtype=dtype)


def mixed_batch(processor) -> dict:
    """Three left-padded prompts: a 1x1-window image (2 crops), a 2x3-window image (7 crops) and text only."""
    batch = processor(text=PROMPTS, images=[[make_image(1, 0)], [make_image(6, 1)], []])
    assert batch["image_grids"].tolist() == [[1, 1], [2, 3]]
    return batch


def max_and_mean_error(got: torch.Tensor, want: torch.Tensor, rows: torch.Tensor) -> tuple[float, float]:
    """Largest and mean |got - want| over the real (non-padding) token positions `rows` (B, T)."""
    diff = (got.double().cpu() - want.double().cpu())[rows]
    return float(diff.abs().max()), float(diff.abs().mean())


# -- a. zero gates: the model is its base LLM --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@torch.no_grad()
def test_zero_gates_give_the_bare_llm_logits_exactly(dtype):
    """With every gate at zero each block adds tanh(0) * (finite) = 0 exactly, and the LLM then runs the same kernels
    on the same inputs as the bare LLM, so the logits are bit-identical in any dtype (bf16 included: no tolerance)."""
    model, processor = tiny(gates=None)
    bare = bare_llm_copy(model).to(device=DEVICE, dtype=dtype)
    model = model.to(device=DEVICE, dtype=dtype)
    batch = to(DEVICE, mixed_batch(processor))
    real = batch["attention_mask"].bool()
    ours = model(**batch).logits
    ref = bare(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert ours.dtype == ref.dtype == dtype and ours.device.type == DEVICE.type
    assert torch.isfinite(ours[real]).all()
    assert torch.equal(ours[real], ref[real]), f"max |diff| {(ours[real].float() - ref[real].float()).abs().max()}"
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    kw |= dict(pad_token_id=0, eos_token_id=model.generation_config.eos_token_id)  # the same stops on both sides
    text = {k: batch[k] for k in ("input_ids", "attention_mask")}
    assert torch.equal(model.generate(**batch, **kw), bare.generate(**text, **kw))


# -- b. device logits = CPU logits -------------------------------------------------------------------------------------
@torch.no_grad()
def test_float32_logits_match_cpu_and_float64():
    """Non-zero gates, 2- and 7-crop images and a text-only row in one padded batch. Tolerance 1e-5 + 1e-4 x max|logit|
    (~8e-5 here): about 300x the CPU's own float32 rounding error against float64 on these logits (2e-7 at max|logit|
    0.6), ~50x below the error of a bf16 matmul leaking into the float32 path (4e-3) and below a TF32 one."""
    model, processor = tiny()
    batch = mixed_batch(processor)
    real = batch["attention_mask"].bool()
    cpu = model(**batch).logits
    f64 = copy.deepcopy(model).double()(**{k: v.double() if v.is_floating_point() else v for k, v in batch.items()})
    dev = on_device(model)(**to(DEVICE, batch)).logits
    assert dev.dtype == torch.float32 and dev.device.type == DEVICE.type
    scale = float(cpu[real].abs().max())
    tol = 1e-5 + 1e-4 * scale
    for name, ref in (("CPU float32", cpu), ("CPU float64", f64.logits)):
        worst, _ = max_and_mean_error(dev, ref, real)
        assert worst <= tol, f"{DEVICE} float32 logits differ from {name} by {worst:.2e} (tolerance {tol:.2e})"
    # The image must matter, or the comparison above would not exercise the vision path at all.
    blank = to(DEVICE, processor(text=PROMPTS, images=[[Image.new("RGB", (448, 448))], [make_image(6, 1)], []]))
    moved = (on_device(model)(**blank).logits[0] - dev[0])[real[0].to(DEVICE)].abs().max()
    assert moved > 100 * tol, "the first image barely changes its prompt's logits: the gates are not doing anything"


@pytest.mark.parametrize("mode", ["autocast", "weights"], ids=["bf16-autocast", "bf16-weights"])
@torch.no_grad()
def test_bfloat16_logits_are_as_close_to_float32_as_on_cpu(mode):
    """bf16 on the device versus CPU float32: the error scale of bf16 is the CPU's own bf16 run of the same model
    against its float32 run (same precision, other kernels and summation orders). The device may be up to 4x worse
    in the largest and the mean error (floored at 1 and 1/4 bf16 step of max|logit|): a wrong mask, a missing cast or
    an overflow gives errors of the size of the logits, not of a few bf16 roundings."""
    model, processor = tiny()
    batch = mixed_batch(processor)
    real = batch["attention_mask"].bool()
    ref = model(**batch).logits

    def bf16_logits(device: torch.device | str) -> torch.Tensor:
        if mode == "weights":
            return copy.deepcopy(model).to(device=device, dtype=torch.bfloat16)(**to(device, batch)).logits.float()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            return copy.deepcopy(model).to(device)(**to(device, batch)).logits.float()

    cpu_max, cpu_mean = max_and_mean_error(bf16_logits("cpu"), ref, real)
    dev = bf16_logits(DEVICE)
    assert torch.isfinite(dev[real.to(DEVICE)]).all()
    dev_max, dev_mean = max_and_mean_error(dev, ref, real)
    scale = float(ref[real].abs().max())
    max_tol, mean_tol = 4 * max(cpu_max, BF16_STEP * scale), 4 * max(cpu_mean, BF16_STEP * scale / 4)
    assert dev_max <= max_tol, f"bf16 {mode}: max error {dev_max:.2e} vs CPU bf16 {cpu_max:.2e} (tol {max_tol:.2e})"
    assert dev_mean <= mean_tol, f"bf16 {mode}: mean error {dev_mean:.2e} vs CPU {cpu_mean:.2e} (tol {mean_tol:.2e})"


# -- c. cached greedy decoding -----------------------------------------------------------------------------------------
def check_greedy(model, batch: dict, sequences: torch.Tensor, eos_ids: list[int], what: str, tie: float) -> int:
    """Teacher-force `sequences` (B, P + n) through `model` without any cache: every new token must be the argmax of
    the logits before it (EOS masked, as `min_new_tokens` does), or within `tie` of it (a near-tie that rounding may
    flip). By induction this is "the same tokens as a step-by-step greedy loop". Returns the near-ties accepted."""
    device = next(model.parameters()).device
    prompt_len = batch["input_ids"].shape[1]
    ids = sequences.to(device)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(sequences[:, prompt_len:])], 1).to(device)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            pixel_values=batch["pixel_values"].to(device),
            image_grids=batch["image_grids"].to(device),
            use_cache=False,
        ).logits[:, prompt_len - 1 : -1]  # (B, n, V): position t predicts token t + 1
    logits = logits.float()
    logits[..., eos_ids] = -math.inf
    new = ids[:, prompt_len:]
    gap = logits.max(-1).values - logits.gather(-1, new[..., None]).squeeze(-1)  # (B, n), 0 where it is the argmax
    assert bool((gap <= tie).all()), f"{what}: a generated token is not the greedy choice (logit gaps {gap.tolist()})"
    return int((gap > 0).sum())


@torch.no_grad()
def test_cached_greedy_generate_equals_uncached_argmax_and_cpu():
    """16 tokens with the text KV cache and cached cross-attention k/v on the device, for a 2-crop and a 7-crop image
    in one left-padded batch. Near-tie allowance 1e-5: the logits here are ~0.6 in size, float32 noise ~1e-7, and
    the smallest top-2 gap on the CPU is ~1e-3, so on a healthy device no tie is expected at all."""
    model, processor = tiny(seed=2)  # a seed whose greedy output is not one token repeated
    batch = processor(text=PROMPTS[:2], images=[[make_image(1, 2)], [make_image(6, 3)]])
    eos = list(model.generation_config.eos_token_id)
    kw = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False)
    dev_model = on_device(model)
    dev = dev_model.generate(**to(DEVICE, batch), **kw)
    assert dev.shape == (2, batch["input_ids"].shape[1] + 16) and dev.device.type == DEVICE.type
    ties = check_greedy(dev_model, batch, dev, eos, f"{DEVICE} cached vs {DEVICE} uncached", tie=1e-5)
    ties += check_greedy(model, batch, dev.cpu(), eos, f"{DEVICE} cached vs CPU uncached", tie=1e-5)
    if ties == 0:  # no near-tie anywhere: then CPU greedy must give exactly these tokens
        assert torch.equal(model.generate(**batch, **kw), dev.cpu())
    assert ties <= 2, f"{ties} near-ties in 32 tokens: the logits are too flat for this test to mean much"
    assert min(len(set(row)) for row in dev[:, -16:].tolist()) >= 3, "degenerate output (a token or two repeated)"


# -- d. chunked LM head + cross-entropy --------------------------------------------------------------------------------
N, H, V = 300, 64, 1000  # rows not a multiple of the chunk sizes below


def lce_problem(seed: int = 0):
    """hidden (N, H), weight (V, H), targets (N,) with 20 ignored rows; float32 on the CPU."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g)
    weight = torch.randn(V, H, generator=g) * 0.3
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.randperm(N, generator=g)[:20]] = -100
    return hidden, weight, targets


def float64_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """Summed cross-entropy of the materialised logits and its gradients, in float64 on the CPU."""
    h = hidden.detach().cpu().double().requires_grad_()
    w = weight.detach().cpu().double().requires_grad_()
    loss = F.cross_entropy(F.linear(h, w), targets.cpu(), ignore_index=-100, reduction="sum")
    return (loss.detach(), *torch.autograd.grad(loss, [h, w]))


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, None], ids=lambda c: f"chunk-{c or 'default'}")
def test_linear_cross_entropy_float32_equals_materialised_logits(chunk_rows):
    """Loss sum and both gradients against float64 cross-entropy over the full logits: float32 rounding only."""
    hidden, weight, targets = lce_problem()
    h = hidden.to(DEVICE).requires_grad_()
    w = weight.to(DEVICE).requires_grad_()
    loss, count = linear_cross_entropy(h, w, targets.to(DEVICE), chunk_rows=chunk_rows)
    grads = torch.autograd.grad(loss * 0.5, [h, w])  # an incoming gradient that is not 1
    want_loss, want_h, want_w = float64_reference(hidden, weight, targets)
    assert loss.dtype == torch.float32 and loss.device.type == DEVICE.type and int(count) == N - 20
    torch.testing.assert_close(loss.double().cpu(), want_loss, rtol=1e-5, atol=0)
    for name, got, want in (("hidden", grads[0], want_h * 0.5), ("weight", grads[1], want_w * 0.5)):
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()), msg=name)
    assert torch.all(grads[0][targets.to(DEVICE) == -100] == 0), "an ignored row got a gradient"


def test_linear_cross_entropy_under_bf16_autocast():
    """Under autocast the logits come from a bf16 matmul (float32 softmax), as `lm_head(h).float()` does.

    Loss: against float64 cross-entropy of the bf16-rounded inputs, whose only difference is the bf16 rounding of
    each logit (<= half a step, random in sign): 2^-12 of the sum (0.65 of 2,677) is 10x the error seen on the CPU
    (0.065), and one wrong target row moves the sum by ~3. Gradients: against autograd through the same autocast
    path on the device, within two bf16 steps of the largest entry and 1/8 step on average (same rounding points,
    other matmuls)."""
    hidden, weight, targets = lce_problem(seed=1)
    h = hidden.to(DEVICE).requires_grad_()
    w = weight.to(DEVICE).requires_grad_()
    t = targets.to(DEVICE)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(h, w, t, chunk_rows=64)
        logits = F.linear(h, w)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    want_loss, _, _ = float64_reference(hidden.bfloat16(), weight.bfloat16(), targets)
    assert abs(loss.item() - want_loss.item()) <= 2**-12 * want_loss.item(), (loss.item(), want_loss.item())
    autograd_loss = F.cross_entropy(logits.float(), t, ignore_index=-100, reduction="sum")
    got = torch.autograd.grad(loss * 0.37, [h, w])
    want = torch.autograd.grad(autograd_loss * 0.37, [h, w])
    for name, g, r in zip(["hidden", "weight"], got, want, strict=True):
        step = float(r.abs().max()) * BF16_STEP
        assert g.dtype == torch.float32
        assert float((g - r).abs().max()) <= 2 * step, f"{name} gradient off by {(g - r).abs().max()}"
        assert float((g - r).abs().mean()) <= step / 8, f"{name} gradient off on average"


@pytest.mark.parametrize("precision", ["float32", "bf16-autocast"])
def test_skip_logits_loss_equals_the_full_logits_loss(precision):
    """`model(..., labels, skip_logits=True)` (chunked head over the scored rows) against cross-entropy over the
    model's own full logits on the device. float32: loss and three parameters' gradients to float32 rounding. bf16
    autocast: the loss within 2^-10 relative (0.09 of 91 here, where the CPU differs by 1e-5: both sides round the
    same logits to bf16, from different matmuls on a GPU; see the test above)."""
    model, _ = tiny()
    model = model.to(DEVICE).train()
    batch = to(DEVICE, next(StandInBatches(model.config.image_token_id, batch_size=3, seq_len=20, seed=3)))
    labels = batch["labels"].clone()
    labels[0, :12] = -100  # rows score different spans
    labels[1, 5:] = -100
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grids")}
    params = [
        model.cross_attention_blocks()[3].attn.to_q.weight,
        model.get_output_embeddings().weight,
        model.get_input_embeddings().weight,
    ]
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision != "float32")
    with autocast:
        got = model(**inputs, labels=labels, skip_logits=True, loss_reduction="sum")
        logits = model(**inputs).logits[:, :-1].float()
    assert got.logits is None
    want = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    if precision != "float32":
        assert abs(got.loss.item() - want.item()) <= 2**-10 * want.item(), (got.loss.item(), want.item())
        return
    torch.testing.assert_close(got.loss, want, rtol=1e-5, atol=1e-5)
    for name, g, w in zip(
        ["block to_q", "lm_head", "embeddings"],
        torch.autograd.grad(got.loss, params),
        torch.autograd.grad(want, params),
        strict=True,
    ):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


# -- e. the training loop: bf16 steps, trainable set, exact resume -----------------------------------------------------
class RepeatedBatch:
    """The loop's batch source over one fixed batch: infinite, with the position it checkpoints."""

    def __init__(self, batch: dict) -> None:
        self.batch, self.position = batch, 0

    def __iter__(self) -> RepeatedBatch:
        return self

    def __next__(self) -> dict:
        self.position += 1
        return dict(self.batch)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def run_training(output_dir, max_steps: int):
    """Stage 1 (cross-attention only, random gates) on the device, bf16 autocast, constant LR, deterministic;
    a checkpoint every step. Returns (the trained model, its weights before training, the logged history)."""
    from accelerate import Accelerator

    from infimm_hd.training.loop import train

    model, _ = tiny(seed=1)
    apply_trainable(model, TrainableSpec(cross_attention=True))
    batch = next(StandInBatches(model.config.image_token_id, batch_size=2, seq_len=24, seed=7))
    config = TrainConfig(
        output_dir=output_dir,
        max_steps=max_steps,
        learning_rate=2e-3,
        min_learning_rate=2e-3,
        mixed_precision="bf16",
        save_every=1,
        keep_last=10,
        log_every=1,
        tensorboard=False,
        deterministic=True,
    )
    accelerator = Accelerator(mixed_precision="bf16", cpu=DEVICE.type == "cpu")
    assert accelerator.device.type == DEVICE.type, f"accelerate chose {accelerator.device}, the test runs on {DEVICE}"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(model, RepeatedBatch(batch), SFTObjective(), config, accelerator=accelerator)
    return model, before, result.history


def test_training_steps_in_bf16_and_an_exact_resume(tmp_path):
    """Four bf16 steps of `training.loop.train` on one repeated batch: finite losses that fall at every step, only
    the trainable tensors move; then a run stopped after 2 steps and resumed from its checkpoint (fresh model, as
    a new process would build it) repeats steps 3-4 bit for bit (loss, grad norm, final weights), which goes through
    the optimizer, scheduler and RNG state (CUDA generators included on a GPU) of `training/checkpoint.py`."""
    if DEVICE.type == "cuda" and DEVICE.index not in (None, 0):
        pytest.skip("accelerate puts a single process on cuda:0; use CUDA_VISIBLE_DEVICES to pick the GPU instead")
    model, before, history = run_training(tmp_path / "straight", max_steps=4)
    losses = [h["loss"] for h in history]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(math.isfinite(x) for x in losses) and all(math.isfinite(h["grad_norm"]) for h in history)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), f"loss did not fall at every step: {losses}"
    assert next(model.parameters()).device.type == DEVICE.type
    declared = {name for name in before if ".cross_attn." in name}  # stage 1: the gated blocks, nothing else
    changed = set()
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, f"{name}: master weights must stay float32 under bf16 autocast"
        if not torch.equal(param.detach().cpu(), before[name]):
            changed.add(name)
    wrong, stuck = sorted(changed - declared)[:4], sorted(declared - changed)[:4]
    assert changed == declared, f"changed but frozen: {wrong}; trainable but unchanged: {stuck}"
    rng = ckpt.read_json(tmp_path / "straight" / "checkpoints" / "step-00000002" / "rank-00000" / "rng.json")
    assert ("cuda" in rng) == (DEVICE.type == "cuda"), f"checkpoint RNG holds {sorted(rng)}"

    run_training(tmp_path / "resumed", max_steps=2)
    resumed, _, tail = run_training(tmp_path / "resumed", max_steps=4)  # resume="auto": from step-00000002
    assert [h["step"] for h in tail] == [3, 4]
    for got, want in zip(tail, history[2:], strict=True):
        assert got["loss"] == want["loss"] and got["grad_norm"] == want["grad_norm"], (got, want)
    straight = dict(model.named_parameters())
    for name, param in resumed.named_parameters():
        assert torch.equal(param, straight[name]), f"{name} differs after the resume"


def test_rng_state_round_trips_on_the_device():
    """`checkpoint.rng_state` / `set_rng_state` restore the device's generator (the CUDA path on a GPU)."""
    torch.randn(3, device=DEVICE)  # initialise the device generator (and CUDA) first
    state = ckpt.rng_state()
    assert ("cuda" in state) == (DEVICE.type == "cuda")
    first = torch.randn(1000, device=DEVICE)
    ckpt.set_rng_state(state)
    again = torch.randn(1000, device=DEVICE)
    assert torch.equal(first, again), "the restored generator does not repeat its draws"


# -- f. fused AdamW ----------------------------------------------------------------------------------------------------
def test_fused_adamw_on_the_device_matches_unfused_cpu_adamw():
    """`optim.build_optimizer` (fused AdamW, decay / no-decay groups, a scaled vision LR) against the for-loop
    `torch.optim.AdamW` on the CPU over 3 steps of identical random gradients. Tolerance 1e-6 absolute: 0.1% of one
    update (lr 1e-3) and 10x below the weight-decay term (lr x 0.1 x |w|), so a wrong group, LR scale, bias
    correction or decay shows up; float32 rounding of the weights (~1e-8) does not."""
    model, _ = tiny()
    apply_trainable(model, TrainableSpec(cross_attention=True, vision_tower=True, embeddings=True))
    ref_model, dev_model = copy.deepcopy(model), on_device(model)
    settings = dict(lr=1e-3, weight_decay=0.1, lr_scales={"vision_tower": 0.1})
    fused = build_optimizer(dev_model, betas=(0.9, 0.95), eps=1e-8, **settings)
    assert fused.defaults["fused"], "build_optimizer must pick the fused kernel on this device"
    groups = param_groups(ref_model, settings["weight_decay"], settings["lr_scales"], lr=settings["lr"])
    reference = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False, fused=False)
    dev_params = {n: p for n, p in dev_model.named_parameters() if p.requires_grad}
    ref_params = {n: p for n, p in ref_model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in ref_params.items()}
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for name, ref in ref_params.items():
            grad = torch.randn(ref.shape, generator=g)
            ref.grad, dev_params[name].grad = grad, grad.to(DEVICE)
        fused.step()
        reference.step()
    for name, ref in ref_params.items():
        got = dev_params[name].detach().cpu()
        torch.testing.assert_close(got, ref.detach(), rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
        assert (got - start[name]).abs().max() > 1e-4, f"{name} did not move: nothing was compared"
        state = fused.state[dev_params[name]]
        torch.testing.assert_close(state["exp_avg"].cpu(), reference.state[ref]["exp_avg"], rtol=1e-5, atol=1e-7)


# -- g. the inference API ----------------------------------------------------------------------------------------------
LETTERS = "abcdefghijklmnopqrstuvwxyz "


class OnlyTokens(LogitsProcessor):
    """Masks every token but `allowed`, so the byte-level tiny model's greedy answers stay printable and distinct."""

    def __init__(self, allowed: list[int]) -> None:
        self.allowed = torch.tensor(allowed)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        allowed = self.allowed.to(scores.device)
        masked = torch.full_like(scores, -math.inf)
        masked[:, allowed] = scores[:, allowed]
        return masked


def coloured(windows: int, colour: str, seed: int) -> Image.Image:
    base = make_image(windows, seed)
    return Image.blend(base, Image.new("RGB", base.size, colour), 0.75)


def test_answer_and_session_on_the_device_equal_cpu():
    """Greedy `answer`, `open_image(...).ask` and a two-turn `chat` on the device give the CPU's answer texts."""
    model, processor = tiny(gates=4.0)  # large gates: the answers follow the image
    letters = [processor.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in LETTERS]
    kw = {"max_new_tokens": 12, "logits_processor": LogitsProcessorList([OnlyTokens(letters)])}
    image, other = coloured(9, "red", seed=1), coloured(9, "blue", seed=2)
    cpu = infimm_hd.answer(model, processor, image, "What is it?", **kw)
    assert cpu != infimm_hd.answer(model, processor, other, "What is it?", **kw), "answers ignore the image"
    dev_model = on_device(model)
    assert infimm_hd.answer(dev_model, processor, image, "What is it?", **kw) == cpu
    session = infimm_hd.open_image(dev_model, processor, image)
    assert session.context.kv_cache[3][0].device.type == DEVICE.type
    assert session.ask("What is it?", **kw) == cpu
    cpu_session = infimm_hd.open_image(model, processor, image)
    for question in ("Describe the picture.", "And the colour?"):
        assert session.chat(question, **kw) == cpu_session.chat(question, **kw), question


# -- the optional flash-attention path: its error ----------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_flash_cross_attention_without_flash_attn_fails_clearly():
    model, processor = tiny()
    model = model.to(DEVICE)
    model.config.cross_attention_implementation = "flash_attention_2"
    with pytest.raises(ImportError, match="needs the flash-attn package"), torch.no_grad():
        model(**to(DEVICE, mixed_batch(processor)))
