"""Measure a model's training step at small shapes, unit by unit, and fit each unit's shape law.

Why measured and not a hand formula: what a step keeps for backward (and what it computes) depends on the model's
code, the autograd rules of every op, what is frozen, and checkpointing; counting it by hand is where planners go
wrong. So the planner runs the real model on this machine: a *reduced-depth copy at full width* (five decoder
layers, two of them carrying cross-attention blocks, and two vision blocks; see `reduced_config`) with random
weights, for one training step at five small shapes of one sample. `LiveTensorMemory` watches it (bytes of live
tensors, read by hooks at each unit's forward and backward); torch's `FlopCounterMode` counts FLOPs per module in a
second pass, never the one whose memory is measured (`count_flops` says why).

Units are the pieces the depth repeats: plain decoder layers, decoder layers with their block (one checkpointing
region and one FSDP pair), vision blocks; the rest (embeddings, LM head and loss, vision stem) is what they leave.
Per unit the probe records its retained activations (live bytes from its start to the next unit's), its forward and
backward working memory, its gradients and its FLOPs. Per sample these follow shape laws in the text length T and
the crops K of its image (L tokens per crop, fixed by the window), e.g. a decoder layer's FLOPs a*T + b*T^2 and its
activations a*T (flash-style attention); five shapes (three lengths, two crop counts) fit them by least squares
(the residual is kept). A plan multiplies the laws by the full model's unit counts and the micro-batch (samples
are independent; padding is the user's, not the law's) and replays the step's memory high-water
(`step_high_water`).
"""

from __future__ import annotations

import copy
import gc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop, sdpa_flop

from ..configuration import InfiMMHDConfig
from ..modeling import InfiMMHDForConditionalGeneration, decoder_layers
from ..training.loop import enable_gradient_checkpointing
from ..training.trainable import TrainableSpec, apply_trainable
from .live_memory import LiveTensorMemory, model_state_tensors
from .shape_laws import FLOP_BASIS, MEMORY_BASIS, WORK_BASIS, ProbeSample, ShapeLaw, UnitCosts, UnitLaws, fit_law

UNIT_KINDS = (
    "llm_first_off_path", "llm_first", "llm_layer_off_path", "llm_layer", "first_cross_attention",
    "cross_attention", "llm_last", "vision_block", "vision_last", "rest",
)  # fmt: skip
OFF_PATH = ("llm_first_off_path", "llm_layer_off_path")
REPEATED = UNIT_KINDS[:-1]
PROBE_TEXT = (48, 96, 192)  # T1, T2, T3
# K1, K2: thumbnail-only stages (the thumbnail alone takes a path of its own), and stages with windows
PROBE_CROPS_THUMBNAIL = (1, 2)
PROBE_CROPS_WINDOWS = (2, 3)


def _register_cpu_attention_flops() -> None:
    """FlopCounterMode counts the CUDA attention kernels but not the CPU flash kernel torch picks on this machine;
    the FLOPs are the same (torch's own `sdpa_flop` formulas), so register them for the CPU op too."""
    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    from torch.utils.flop_counter import flop_registry

    if forward is not None and forward.default not in flop_registry:

        @register_flop_formula(forward)
        def _cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop(query_shape, key_shape, value_shape)

    if backward is not None and backward.default not in flop_registry:

        @register_flop_formula(backward)
        def _cpu_flash_bw(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention_flops()


@dataclass
class ProbeRun:
    """One measured step: per-kind costs of one unit (the last of its kind in forward order, the steady state a deep
    model repeats), the rest as what the units do not account for, and the step's totals. Working memory is in the
    planner's accounting (see `measure_step`)."""

    sample: ProbeSample
    units: dict[str, UnitCosts] = field(default_factory=dict)
    base_bytes: int = 0  # parameters, buffers, optimizer states before the step
    peak_bytes: int = 0
    activation_bytes: int = 0  # retained at the end of forward
    grad_bytes: int = 0
    head_work: float = 0.0  # loss and LM head backward, before the first unit's backward (planner accounting)
    stem_work: float = 0.0  # after the last unit's backward: vision stem, embeddings (planner accounting)

    def cost(self, kind: str) -> UnitCosts:
        return self.units.get(kind, UnitCosts())


def reduced_config(config: InfiMMHDConfig, frozen_prefix: bool = True) -> InfiMMHDConfig:
    """The same model at full width with one decoder layer of each kind the full model has, and two of the kinds
    it repeats, plus two vision blocks (the second ends the tower).

    Layers: the first; with a frozen LLM (`frozen_prefix`) a second plain layer before any block (off the gradient
    path); the first layer with a block; a plain layer and a layer with a block as every later group repeats them;
    and a last layer, with a block exactly when the full model's last layer has one. Five or six layers rather than
    the model's groups of four keep a 13B-wide copy with its gradients in a CPU's memory.
    """
    small = copy.deepcopy(config)
    last_has_block = config.text_config.num_hidden_layers - 1 in config.cross_attention_layers
    blocks = [2, 4] if frozen_prefix else [1, 3]
    layers = blocks[-1] + 2
    small.text_config.num_hidden_layers = layers
    small.cross_attention_layers = blocks + ([layers - 1] if last_has_block else [])
    vision = small.vision_config
    vision.depth = 2
    if vision.model_name is not None:
        # A named tower (open_clip's EVA02-E-14 for paper-13b) is built at its registry depth, so the copy uses the
        # same block explicitly: timm's EVA-CLIP layout (post-norm for EVA-CLIP-E) at the same width, heads and MLP.
        eva = "eva" in vision.model_name.lower()
        vision.backend, vision.model_name = "timm", None
        vision.architecture, vision.block_norm = ("eva", "post") if eva else ("vit", "pre")
    return small


def build_probe_model(
    config: InfiMMHDConfig, seed: int = 0, frozen_prefix: bool = True
) -> InfiMMHDForConditionalGeneration:
    """The reduced model on the CPU in float32 with small random weights (values do not change what is kept or
    computed; they only have to be finite)."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = InfiMMHDForConditionalGeneration(reduced_config(config, frozen_prefix))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    model.vision_tower.init_non_persistent_buffers()
    rotary = getattr(getattr(model.language_model, "model", model.language_model), "rotary_emb", None)
    if rotary is not None and hasattr(rotary, "rope_init_fn"):
        inv_freq, _ = rotary.rope_init_fn(rotary.config, torch.device("cpu"))
        rotary.inv_freq.copy_(inv_freq)
        rotary.original_inv_freq = inv_freq
    return model.float()


def vision_blocks(model: InfiMMHDForConditionalGeneration) -> list[nn.Module]:
    """The vision tower's repeated blocks: its ModuleList (or Sequential) as long as the tower's depth."""
    depth = model.config.vision_config.depth
    for module in model.vision_tower.modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) == depth:
            return list(module)
    raise ValueError(f"cannot find the vision tower's {depth} blocks")


def llm_frozen(trainable: TrainableSpec) -> bool:
    """Neither the LLM nor its embeddings train, so no gradient reaches the layers before the first block."""
    return not (trainable.language_model or trainable.embeddings)


def unit_modules(model: InfiMMHDForConditionalGeneration, trainable: TrainableSpec) -> dict[nn.Module, str]:
    """Every repeated unit -> its kind, in forward order.

    A decoder layer carrying a cross-attention block is one unit with its block (`first_cross_attention` for the
    first, whose text input needs no gradient, `cross_attention` after): it is also one checkpointing region and
    one FSDP pair, so its costs are measured as the whole that training runs. Plain decoder layers before the first
    block are `..._off_path` when neither the LLM nor its embeddings train (no gradient reaches them). The first
    and last layers and the last vision block are the ends of their chains (`llm_first`, `llm_last`,
    `vision_last`): one of each at any depth, each measured as itself.
    """
    units: dict[nn.Module, str] = {}
    first_block = min(model.config.cross_attention_layers)
    frozen_prefix = llm_frozen(trainable)
    layers = list(decoder_layers(model.language_model))
    for index, layer in enumerate(layers):
        off_path = "_off_path" if frozen_prefix and index < first_block else ""
        if index == 0:
            units[layer] = f"llm_first{off_path}"  # the start of the chain: fed by the embeddings
        elif index == len(layers) - 1:
            units[layer] = "llm_last"  # the end of the chain: its output goes to the head, its input outlives it
        elif hasattr(layer, "cross_attn"):
            units[layer] = "first_cross_attention" if index == first_block else "cross_attention"
        else:
            units[layer] = f"llm_layer{off_path}"
    blocks = vision_blocks(model)
    for index, block in enumerate(blocks):
        units[block] = "vision_last" if index == len(blocks) - 1 else "vision_block"
    return units


def probe_batch(config: InfiMMHDConfig, sample: ProbeSample, window: int) -> dict[str, torch.Tensor]:
    """One sample: `<image>` then T-1 text tokens, all scored; K crops (a thumbnail, then K-1 windows in one row)."""
    generator = torch.Generator().manual_seed(sample.text_tokens * 31 + sample.crops)
    vocab = config.text_config.vocab_size
    ids = torch.randint(3, min(vocab, 1000), (1, sample.text_tokens), generator=generator)
    special = torch.tensor([config.image_token_id, config.end_of_chunk_token_id])
    ids[torch.isin(ids, special)] = 3
    ids[0, 0] = config.image_token_id
    grid = [0, 0] if sample.crops == 1 else [1, sample.crops - 1]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.clone(),
        "pixel_values": torch.randn(sample.crops, 3, window, window, generator=generator),
        "image_grids": torch.tensor([grid]),
        "image_sample_index": torch.zeros(1, dtype=torch.long),
    }


def measure_step(
    model: InfiMMHDForConditionalGeneration,
    batch: dict[str, torch.Tensor],
    units: dict[nn.Module, str],
    optimizer: torch.optim.Optimizer | None = None,
) -> ProbeRun:
    """One training step (forward with the chunked loss, backward, optimizer step) under `LiveTensorMemory`, with
    hooks on every unit that cut the step into windows; then its FLOPs in a pass of their own (`count_flops`).

    Working memory is expressed in the planner's own accounting (`step_high_water`): a window's peak minus what that
    accounting says is alive when the window opens. So replaying the accounting with the measured costs gives back
    the measured peak, whatever the real order of frees (e.g. a checkpointed wrapper recomputing two units at once).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)  # every step starts as the loop's do: no gradients held
    gc.collect()
    run = ProbeRun(ProbeSample(int(batch["input_ids"].shape[1]), int(batch["pixel_values"].shape[0])))
    costs = {module: UnitCosts() for module in units}
    forward_peak: dict[nn.Module, int] = {}
    backward_peak: dict[nn.Module, int] = {}
    forward_start: dict[nn.Module, int] = {}
    forward_end: dict[nn.Module, int] = {}
    order: list[nn.Module] = []  # units in the order their forward ran
    state: dict[str, object] = {"backward": False, "window": ("head", None)}
    with LiveTensorMemory(model_state_tensors(model, optimizer)) as memory:
        run.base_bytes = memory.live_bytes
        peaks: dict[str, int] = {}

        def close_window():
            kind, module = state["window"]
            if kind == "head":
                peaks["head"] = memory.window_peak
            elif kind in ("unit", "gap"):  # a unit's backward, and what runs until the next unit's starts
                backward_peak[module] = max(backward_peak.get(module, 0), memory.window_peak)
            memory.open_window()

        def forward_pre(module, *_):
            if not state["backward"] and module not in forward_start:  # not a recomputation in backward
                order.append(module)
                forward_start[module] = memory.open_window()

        def forward_post(module, *_):
            if not state["backward"] and module in forward_start and module not in forward_peak:
                forward_end[module] = memory.live_bytes
                forward_peak[module] = memory.window_peak

        def backward_pre(module, *_):
            close_window()
            state["window"] = ("unit", module)

        def backward_post(module, *_):
            close_window()
            state["window"] = ("gap", module)

        hooks = []
        for module in units:
            hooks += [module.register_forward_pre_hook(forward_pre), module.register_forward_hook(forward_post)]
            if _gradient_reaches(module, units):
                hooks += [
                    module.register_full_backward_pre_hook(backward_pre),
                    module.register_full_backward_hook(backward_post),
                ]
        try:
            with warnings.catch_warnings():
                # A frozen unit's full backward hook fires on output gradients alone, which is what is wanted here.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                out = model(**batch, skip_logits=True)
                run.activation_bytes = memory.live_bytes - run.base_bytes
                state["backward"] = True
                memory.open_window()
                out.loss.backward()
                peaks["stem"] = memory.window_peak  # the window after the last unit's backward
                close_window()
                run.grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
                if optimizer is not None:
                    optimizer.step()
        finally:
            for hook in hooks:
                hook.remove()
            model.zero_grad(set_to_none=True)
            del out
        run.peak_bytes = memory.peak_bytes
    # A unit's activations: what is live at the next unit's start minus what was live at its own, so the input it
    # replaces (freed when the caller moves on) is not counted twice; the last unit of a chain (`llm_last`,
    # `vision_last`) has no next unit and counts up to its own end.
    for index, module in enumerate(order):
        following = order[index + 1] if index + 1 < len(order) else None
        same_chain = following is not None and is_vision(units[following]) == is_vision(units[module])
        end = forward_end[module] if not same_chain else forward_start[following]
        costs[module].retained_bytes = end - forward_start[module]
    for module in units:
        own = [p for p in module.parameters() if p.requires_grad]
        costs[module].grad_bytes = float(sum(p.numel() * p.element_size() for p in own))
    rest = UnitCosts(
        retained_bytes=run.activation_bytes - sum(c.retained_bytes for c in costs.values()),
        grad_bytes=run.grad_bytes - sum(c.grad_bytes for c in costs.values()),
    )
    # Replay the planner's accounting over the real unit order to express each window in it.
    base = run.base_bytes
    alive = rest.retained_bytes
    for module in order:
        costs[module].forward_work = forward_peak.get(module, base) - base - alive
        alive += costs[module].retained_bytes
    run.head_work = peaks.get("head", base) - base - alive
    made = rest.grad_bytes
    for module in reversed(order):
        if module in backward_peak:
            costs[module].backward_work = backward_peak[module] - base - alive - made
        made += costs[module].grad_bytes
        alive -= costs[module].retained_bytes
    run.stem_work = peaks["stem"] - base - alive - made
    per_module, total = count_flops(model, batch)
    names = {module: f"{type(model).__name__}.{name}" for name, module in model.named_modules()}
    for module in units:
        costs[module].flops = float(sum(per_module.get(names[module], {}).values()))
    for module in order:  # the last of its kind in forward order
        run.units[units[module]] = costs[module]
    rest.flops = total - sum(c.flops for c in costs.values())
    run.units["rest"] = rest
    return run


def count_flops(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[dict[str, dict], float]:
    """FLOPs of one forward + backward (recomputation included), per module path and in total, in a pass of its
    own: FlopCounterMode's module tracker keeps a checkpointed region's recomputed tensors alive until the end of
    backward (torch 2.14: 6.3 -> 23.5 MiB above the model for tiny's stage 4 at 2 x 400 tokens x 7 crops), so
    memory is never measured under it. Gradients are dropped again: the step's own are what `measure_step` keeps."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as flops:
        model(**batch, skip_logits=True).loss.backward()
    model.zero_grad(set_to_none=True)
    return flops.get_flop_counts(), float(flops.get_total_flops())  # keys: the root's class name, then the path


def _gradient_reaches(module: nn.Module, units: dict[nn.Module, str]) -> bool:
    """Backward runs through a unit unless it is an LLM layer before any gradient (`llm_layer_off_path`) or a
    vision block of a frozen tower (the tower's input needs no gradient, so only its own weights would call for
    one)."""
    kind = units[module]
    if is_vision(kind):
        return any(p.requires_grad for p in module.parameters())
    return kind not in OFF_PATH


def forward_order(units: dict[nn.Module, str]) -> list[str]:
    """Unit kinds in the order the forward runs them: the vision blocks, then the LLM's units."""
    kinds = list(units.values())
    return [k for k in kinds if is_vision(k)] + [k for k in kinds if not is_vision(k)]


def is_vision(kind: str) -> bool:
    return kind in ("vision_block", "vision_last")


def step_high_water(order: list[str], cost: Callable[[str], UnitCosts], head_work: float, stem_work: float) -> float:
    """The most bytes above the step's starting state (parameters, buffers, optimizer states) alive at once.

    Forward: before unit i runs, the retained activations of the units before it (and the rest's, counted from the
    start) are alive, plus its own working memory. Backward: at its start every unit's activations are alive, the
    loss and head add `head_work` and the rest's gradients; then the units are visited last to first, each adding its
    backward working memory on top of what is alive, making its gradients and freeing its activations; the stem's
    work comes last. The rest's gradients are counted from the start of backward: the conservative placement.
    """
    alive = cost("rest").retained_bytes
    high = 0.0
    for kind in order:
        high = max(high, alive + cost(kind).forward_work)
        alive += cost(kind).retained_bytes
    made = cost("rest").grad_bytes
    high = max(high, alive + head_work, alive + made)
    for kind in reversed(order):
        unit = cost(kind)
        high = max(high, alive + made + unit.backward_work)
        made += unit.grad_bytes
        alive -= unit.retained_bytes
    return max(high, alive + made + stem_work)


def probe_unit_laws(
    config: InfiMMHDConfig,
    trainable: TrainableSpec,
    window: int,
    gradient_checkpointing: bool = False,
    windows: bool = True,
    text_tokens: tuple[int, int, int] = PROBE_TEXT,
) -> UnitLaws:
    """Run the probe shapes on the reduced model and fit every unit's laws; `windows`: the stage tiles (probe 2 and
    3 crops), else it sees thumbnails only (probe 1 and 2)."""
    crops = PROBE_CROPS_WINDOWS if windows else PROBE_CROPS_THUMBNAIL
    model = build_probe_model(config, frozen_prefix=llm_frozen(trainable))
    if window != model.config.window_size:
        model.set_window_size(window)
    apply_trainable(model, trainable)
    model.train()
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)  # exactly what the training loop does
    units = unit_modules(model, trainable)
    samples = [ProbeSample(t, crops[0]) for t in text_tokens] + [ProbeSample(t, crops[1]) for t in text_tokens[:2]]
    runs = [measure_step(model, probe_batch(model.config, s, window), units) for s in samples]

    def law(kind: str, basis, value: Callable[[ProbeRun], float]) -> ShapeLaw:
        return fit_law(kind, basis, [(r.sample, value(r)) for r in runs])

    return UnitLaws(
        flops={k: law(k, FLOP_BASIS[k], lambda r, k=k: r.cost(k).flops) for k in UNIT_KINDS},
        retained={k: law(k, MEMORY_BASIS[k], lambda r, k=k: r.cost(k).retained_bytes) for k in UNIT_KINDS},
        forward_work={k: law(k, WORK_BASIS[k], lambda r, k=k: r.cost(k).forward_work) for k in REPEATED},
        backward_work={k: law(k, WORK_BASIS[k], lambda r, k=k: r.cost(k).backward_work) for k in REPEATED},
        head_work=law("head", WORK_BASIS["head"], lambda r: r.head_work),
        stem_work=law("stem", WORK_BASIS["stem"], lambda r: r.stem_work),
        grad_bytes={k: runs[0].cost(k).grad_bytes for k in UNIT_KINDS},
        window=window,
        gradient_checkpointing=gradient_checkpointing,
    )
