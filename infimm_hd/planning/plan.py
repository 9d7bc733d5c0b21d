"""`plan_train`: what one GPU holds and does in a training step of a stage, under a sharding strategy.

Inputs: a preset, a stage of the recipe (`training.recipe`: what trains, window, window budget), the world size, the
strategy, the micro-batch, the text length T, the crops per image K, checkpointing, dtype and a GPU. Outputs, per
GPU: memory by component, model FLOPs per step, step time and tokens/s at a given MFU, and the bytes a step
communicates.

Where the numbers come from:
* parameters, gradients, optimizer states: counted on the model built on the meta device (or the preset itself),
  by trainable group, and divided as the strategy shards them (table below). Parameters are stored in float32 (what
  the loop trains: bf16 is autocast or FSDP2's compute dtype), gradients float32, AdamW two float32 moments;
* activations, working memory, FLOPs: the unit shape laws that `probe.probe_unit_laws` measures on this machine
  (a reduced-depth copy at full width), times the unit counts and the micro-batch, combined by
  `probe.step_high_water`. Traced in float32: a bf16 plan counts activations and working memory at half;
* FLOPs count attention in full (as FlopCounterMode and the PaLM MFU convention do). Model FLOPs exclude
  checkpointing's recomputation; step time = model FLOPs / (peak x MFU).

| strategy | parameters | gradients | optimizer | also held per GPU |
|---|---|---|---|---|
| ddp | whole | whole (+ a bucket copy) | whole | |
| zero2 | whole | / W | / W | |
| zero3 | / W | / W | / W | the two largest layers gathered (current + prefetch), in the compute dtype |
| fsdp2 | / W | / W | / W | the units of the loop's wrapping (below) |
| fsdp2-hybrid | / node | / node | / node | as fsdp2 |

FSDP2's units are read off the loop's own wrapping (`rehearsal.rehearse`, accelerate's `fsdp2_prepare_model` under a
fake process group), not assumed. Per GPU they add: the units that stay gathered from their forward to the end of
backward (the root, which holds the vision tower, and the LM head), two resharding units gathered at once (current
+ prefetch), and one unit's reduce-scatter (its unsharded float32 gradients and the flat copy FSDP2 reduces). The
root unit reduce-scatters last, when backward is done: until then the vision tower's gradients are whole, and at
that moment its gradients and their flat copy are alive together (`root unit's reduce-scatter`, the peak of a stage
that trains the tower, after its gathered parameters were resharded).

FSDP2 accumulates *unsharded* gradients across micro-batches (the loop syncs only on the last one, and FSDP2's
`set_requires_gradient_sync(False)` keeps full gradients): with accumulation > 1 the gradients are whole there.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

from ..linear_cross_entropy import forward_peak_bytes
from ..modeling import decoder_layers
from ..presets import PRESETS, build_model
from ..training.recipe import PAPER, SMALL, STAGES, Hyperparameters, StageSpec
from ..training.trainable import TrainableSpec, apply_trainable
from .hardware import USABLE_FRACTION, GpuSpec, gpu
from .law_cache import cached_unit_laws
from .probe import REPEATED, forward_order, step_high_water, unit_modules
from .rehearsal import UnitShard, rehearse, unit_traffic
from .shape_laws import UnitCosts, UnitLaws

STRATEGIES = ("ddp", "zero2", "zero3", "fsdp2", "fsdp2-hybrid")
BYTES = {"bf16": 2, "fp32": 4}


class PlanError(ValueError):
    """A plan that cannot be made; the message says why and what would work."""


@dataclass(frozen=True)
class PlanRequest:
    """One stage on one cluster shape. None = the stage's own value: T = its max length, K = its window budget + 1,
    checkpointing, global batch and accumulation as the recipe sets them (Table 8 for paper-13b)."""

    preset: str
    stage: int
    world_size: int = 8
    strategy: str = "fsdp2"
    micro_batch: int | None = None
    text_tokens: int | None = None
    crops: int | None = None
    gradient_checkpointing: bool | None = None
    dtype: str = "bf16"
    gpu: str = "h100"
    mfu: float = 0.4
    gpus_per_node: int = 8
    global_batch: int | None = None
    grad_accumulation: int | None = None


@dataclass
class Plan:
    request: PlanRequest
    gpu: GpuSpec
    micro_batch: int
    grad_accumulation: int
    global_batch: int
    text_tokens: int
    crops: int
    gradient_checkpointing: bool
    memory: dict[str, float] = field(default_factory=dict)  # component -> bytes per GPU (they add up to the peak)
    shares: dict[str, float] = field(default_factory=dict)  # parts of the above (vision tower, cross-attention)
    peak_bytes: float = 0.0
    model_flops: float = 0.0  # per GPU per optimizer step
    hardware_flops: float = 0.0
    step_seconds: float = 0.0
    tokens_per_second: float = 0.0
    communication: dict[str, float] = field(default_factory=dict)  # bytes per GPU per optimizer step
    communication_seconds: float = 0.0

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= USABLE_FRACTION * self.gpu.memory_bytes


# -- model facts -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """Parameter counts and unit layout of a preset, for one trainable set."""

    config: object
    total_params: int
    trainable_params: int
    order: tuple[str, ...]  # unit kinds in forward order
    unit_counts: dict[str, int]
    largest_unit_params: int  # the largest ZeRO-3 gather (a decoder layer or a cross-attention block)
    head_shape: tuple[int, int]  # the LM head's weight (V, H): the chunked loss's logits


@functools.lru_cache(maxsize=32)
def model_facts(preset: str, trainable: TrainableSpec) -> ModelFacts:
    if preset not in PRESETS:
        raise PlanError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    model, _ = build_model(preset, device="meta") if preset == "paper-13b" else build_model(preset)
    apply_trainable(model, trainable)
    params = dict(model.named_parameters())
    units = unit_modules(model, trainable)
    gathered = []
    for layer in decoder_layers(model.language_model):
        gathered.append(getattr(layer, "decoder_layer", layer))
        if hasattr(layer, "cross_attn"):
            gathered.append(layer.cross_attn)
    return ModelFacts(
        config=model.config,
        total_params=sum(p.numel() for p in params.values()),
        trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
        order=tuple(forward_order(units)),
        unit_counts={k: sum(1 for v in units.values() if v == k) for k in REPEATED},
        largest_unit_params=max(sum(p.numel() for p in m.parameters()) for m in gathered),
        head_shape=tuple(model.language_model.get_output_embeddings().weight.shape),
    )


@dataclass(frozen=True)
class FsdpLayout:
    """FSDP2's units as the loop wraps a stage (from `rehearsal.rehearse`). Which modules form units, their sizes and
    which reshard after forward do not depend on the world size: rehearsed once per preset and stage."""

    units: tuple[UnitShard, ...]

    @property
    def held_params(self) -> int:
        """Gathered from their forward to the end of backward: the root (it holds the vision tower) and the LM head."""
        return sum(u.params for u in self.units if not u.reshard_after_forward)

    @property
    def largest_resharded_params(self) -> int:
        return max((u.params for u in self.units if u.reshard_after_forward), default=0)

    @property
    def largest_unit_trainable(self) -> int:
        """The largest reduce-scatter during backward (every unit but the root, which reduces last)."""
        return max((u.trainable for u in self.units if u.name), default=0)

    @property
    def root_trainable(self) -> int:
        return sum(u.trainable for u in self.units if not u.name)

    @property
    def root_holds_vision_tower(self) -> bool:
        return not any(u.name.startswith("vision_tower") for u in self.units)


@functools.lru_cache(maxsize=32)
def fsdp_layout(preset: str, stage: int) -> FsdpLayout:
    model, _ = build_model(preset, device="meta") if preset == "paper-13b" else build_model(preset)
    return FsdpLayout(tuple(rehearse(model, stage, world_size=2).units))


@functools.lru_cache(maxsize=32)
def stage_laws(preset: str, stage: int, gradient_checkpointing: bool) -> UnitLaws:
    spec = STAGES[stage]
    facts = model_facts(preset, spec.trainable)
    return cached_unit_laws(
        facts.config, spec.trainable, spec.window_size, gradient_checkpointing, windows=spec.max_windows > 0
    )


# -- the plan --------------------------------------------------------------------------------------------------------


def _stage(request: PlanRequest) -> tuple[StageSpec, Hyperparameters]:
    if request.stage not in STAGES:
        raise PlanError(f"stage {request.stage} does not exist; the recipe has stages {sorted(STAGES)}")
    table = PAPER if request.preset == "paper-13b" else SMALL
    return STAGES[request.stage], table[request.stage]


def _batching(request: PlanRequest, hp: Hyperparameters) -> tuple[int, int, int]:
    """(micro-batch, accumulation, global batch), checked to multiply out."""
    global_batch = request.global_batch or hp.global_batch
    accumulation = request.grad_accumulation or hp.grad_accumulation
    if request.micro_batch is not None:
        micro = request.micro_batch
        if request.grad_accumulation is None and request.global_batch is None:
            accumulation = max(1, global_batch // (micro * request.world_size))
        global_batch = request.global_batch or micro * accumulation * request.world_size
    else:
        micro, remainder = divmod(global_batch, accumulation * request.world_size)
        if remainder or micro == 0:
            options = [a for a in range(1, global_batch + 1) if global_batch % (a * request.world_size) == 0]
            hint = f"accumulation {options[:6]} divides it" if options else "no accumulation divides it"
            raise PlanError(
                f"global batch {global_batch} is not a whole number of micro-batches on {request.world_size} GPUs "
                f"with accumulation {accumulation}; {hint}, or pick a world size dividing {global_batch}"
            )
    if micro * accumulation * request.world_size != global_batch:
        raise PlanError(
            f"micro-batch {micro} x accumulation {accumulation} x {request.world_size} GPUs = "
            f"{micro * accumulation * request.world_size}, not the global batch {global_batch}"
        )
    return micro, accumulation, global_batch


def _check(request: PlanRequest) -> GpuSpec:
    if request.strategy not in STRATEGIES:
        raise PlanError(f"unknown strategy {request.strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if request.dtype not in BYTES:
        raise PlanError(f"dtype {request.dtype!r}: choose bf16 or fp32")
    if request.world_size < 1 or (
        request.strategy == "fsdp2-hybrid" and request.world_size % request.gpus_per_node != 0
    ):
        raise PlanError(
            f"world size {request.world_size} must be a positive multiple of {request.gpus_per_node} GPUs per node "
            "for fsdp2-hybrid"
        )
    if not 0 < request.mfu <= 1:
        raise PlanError(f"mfu {request.mfu} must be in (0, 1]")
    try:
        return gpu(request.gpu)
    except ValueError as err:
        raise PlanError(str(err)) from None


def plan_train(request: PlanRequest) -> Plan:
    """The plan of one request (see the module docstring); a `PlanError` for an impossible request."""
    device = _check(request)
    spec, hp = _stage(request)
    micro, accumulation, global_batch = _batching(request, hp)
    text = request.text_tokens or hp.max_length
    crops = request.crops or spec.max_windows + 1
    if spec.max_windows == 0 and crops != 1:
        raise PlanError(f"stage {spec.number} sees thumbnails only (1 crop per image), not {crops}")
    checkpointing = (
        spec.gradient_checkpointing if request.gradient_checkpointing is None else request.gradient_checkpointing
    )
    facts = model_facts(request.preset, spec.trainable)
    laws = stage_laws(request.preset, request.stage, checkpointing)
    plain = laws if not checkpointing else stage_laws(request.preset, request.stage, False)

    world, strategy = request.world_size, request.strategy
    shard = {"ddp": 1, "zero2": 1, "zero3": world, "fsdp2": world, "fsdp2-hybrid": request.gpus_per_node}[strategy]
    state_shard = 1 if strategy == "ddp" else shard if strategy != "zero2" else world
    fsdp = strategy.startswith("fsdp2")
    grad_shard = 1 if (fsdp and accumulation > 1) else state_shard
    compute = BYTES[request.dtype]
    scale = micro * compute / 4  # per-sample float32 traces -> this micro-batch in the compute dtype

    grad_total = facts.trainable_params * 4.0
    per_kind_grads = {k: laws.grad_bytes.get(k, 0.0) for k in REPEATED}
    rest_grads = grad_total - sum(per_kind_grads[k] * facts.unit_counts[k] for k in REPEATED)
    measured = laws.costs(text, crops)

    layout = fsdp_layout(request.preset, request.stage) if fsdp and shard > 1 else None
    # FSDP2 reduce-scatters the root unit (the vision tower's blocks) only when backward is done: whole until then.
    whole_until_the_end = ("vision_block", "vision_last") if layout and layout.root_holds_vision_tower else ()

    def cost(kind: str, root_whole: bool = False, accumulated: bool = False) -> UnitCosts:
        c = measured(kind)
        grads = rest_grads if kind == "rest" else per_kind_grads[kind]
        grads = grads if (root_whole and kind in whole_until_the_end) else grads / grad_shard
        grads = 0.0 if accumulated else grads  # later micro-batches add into gradients that already exist
        return UnitCosts(c.retained_bytes * scale, c.forward_work * scale, c.backward_work * scale, grads)

    head, stem = laws.head_work(text, crops) * scale, laws.stem_work(text, crops) * scale
    activations = cost("rest").retained_bytes + sum(cost(k).retained_bytes * facts.unit_counts[k] for k in REPEATED)
    # The end of forward: every activation alive and the chunked loss's logits on top. Not a probe law: the chunks
    # saturate at `rows_per_chunk` rows, which a one-sample probe at 48-192 tokens never reaches, so the loss
    # kernel's own account of its buffers is used (checked against a measurement in tests/test_linear_cross_entropy).
    vocab, hidden = facts.head_shape
    # every token but the first scored: an upper bound (a prompt's tokens are not scored in SFT)
    loss_chunks = float(forward_peak_bytes(micro * (text - 1), vocab, hidden, compute))
    gradients = grad_total / grad_shard
    dynamic = max(step_high_water(list(facts.order), cost, head, stem), activations + loss_chunks)
    if accumulation > 1:  # every micro-batch after the first runs with the step's gradients already alive
        later = step_high_water(list(facts.order), functools.partial(cost, accumulated=True), head, stem)
        dynamic = max(dynamic, gradients + max(later, activations + loss_chunks))
    memory = {
        "parameters (fp32)": facts.total_params * 4.0 / shard,
        "gradients (fp32)": gradients,
        "optimizer states (AdamW, fp32)": facts.trainable_params * 8.0 / state_shard,
    }
    if strategy == "ddp":
        memory["DDP gradient buckets"] = grad_total
    if strategy == "zero3" and shard > 1:
        memory["gathered layers (current + prefetch)"] = 2.0 * facts.largest_unit_params * compute
    if layout is not None:
        copies = 2 if grad_shard > 1 else 1  # unsharded gradients + the flat copy; accumulated ones are counted above
        memory["gathered root unit (vision tower) and LM head"] = layout.held_params * compute
        memory["gathered layers (current + prefetch)"] = 2.0 * layout.largest_resharded_params * compute
        memory["reduce-scatter of one unit (fp32)"] = copies * layout.largest_unit_trainable * 4.0
    memory["activations (micro-batch)"] = activations
    # The step's high-water above the state is `dynamic`; activations and gradients are listed whole, but backward
    # frees a unit's activations as it makes its gradients, so when they never all coexist the difference is a
    # negative row (the peak stays the high-water, and the rows still add up to it).
    working = dynamic - activations - gradients
    if working >= 0:
        memory["working memory (backward, loss chunk)"] = working
    else:
        memory["not alive at once (activations freed as gradients are made)"] = working
    if layout is not None and whole_until_the_end and grad_shard > 1:
        whole = step_high_water(list(facts.order), functools.partial(cost, root_whole=True), head, stem)
        whole = max(whole, activations + loss_chunks)
        if whole > dynamic:
            memory["vision tower's gradients until the root's reduce-scatter"] = whole - dynamic
    if layout is not None:
        # The end of backward: every unit but the root resharded and reduced, the root's gradients and their flat
        # copy alive together. It is the peak when it exceeds all of the above but the sharded state.
        during = sum(memory.values()) - memory["parameters (fp32)"] - memory["optimizer states (AdamW, fp32)"]
        end = gradients + copies * layout.root_trainable * 4.0
        if end > during:
            memory["root unit's reduce-scatter (end of backward, above the rest)"] = end - during
    shares = {
        "activations of the vision tower": sum(
            cost(k).retained_bytes * facts.unit_counts[k] for k in ("vision_block", "vision_last")
        ),
        "activations of the cross-attention": sum(
            cost(k).retained_bytes * facts.unit_counts[k] for k in ("first_cross_attention", "cross_attention")
        ),
        "logits / loss chunk": max(head, loss_chunks),
    }

    def flops(of: UnitLaws) -> float:
        per_sample = of.flops["rest"](text, crops) + sum(
            of.flops[k](text, crops) * facts.unit_counts[k] for k in REPEATED
        )
        return per_sample * micro * accumulation

    plan = Plan(
        request, device, micro, accumulation, global_batch, text, crops, checkpointing, memory, shares,
        peak_bytes=sum(memory.values()), model_flops=flops(plain), hardware_flops=flops(laws),
    )  # fmt: skip
    plan.step_seconds = plan.model_flops / (device.peak_flops(request.dtype) * request.mfu)
    plan.tokens_per_second = global_batch * text / plan.step_seconds
    plan.communication = _communication(facts, request, accumulation, compute)
    nodes = max(1, world // request.gpus_per_node)
    bandwidth = (device.inter_node_gbs if nodes > 1 else device.intra_node_gbs) * 1e9
    plan.communication_seconds = sum(plan.communication.values()) / bandwidth
    return plan


def _communication(facts: ModelFacts, request: PlanRequest, accumulation: int, compute: int) -> dict[str, float]:
    """Bytes each GPU sends per optimizer step (ring collectives: (n-1)/n of the buffer)."""
    world, strategy = request.world_size, request.strategy
    if world == 1:
        return {}
    grads = facts.trainable_params * 4.0
    ring = (world - 1) / world
    if strategy == "ddp":
        return {"all-reduce gradients": 2 * ring * grads}
    if strategy == "zero2":
        return {"reduce-scatter gradients": ring * grads, "all-gather updated parameters": ring * grads}
    group = world if strategy != "fsdp2-hybrid" else request.gpus_per_node
    if strategy.startswith("fsdp2"):
        out = unit_traffic(list(fsdp_layout(request.preset, request.stage).units), group, compute, accumulation)
    else:  # ZeRO-3: every layer gathered for each micro-batch's forward and again for its backward
        ring = (group - 1) / group
        out = {
            "all-gather (forward + backward)": ring * 2 * facts.total_params * compute * accumulation,
            "reduce-scatter (gradients)": ring * grads * accumulation,
        }
    if strategy == "fsdp2-hybrid" and world > group:
        replicas = world // group
        out["all-reduce shards across nodes"] = 2 * (replicas - 1) / replicas * grads / group
    return out


# -- the nearest plan that fits ----------------------------------------------------------------------------------------


def nearest_fit(request: PlanRequest) -> Plan | None:
    """The closest plan that fits: for the micro-batches that keep the global batch (the requested one first, then
    by distance), checkpointing, then a stronger sharding; None if nothing does."""
    base = plan_train(request)
    if base.fits:
        return base
    stronger = {"ddp": ["zero2", "fsdp2"], "zero2": ["fsdp2"], "zero3": ["fsdp2"], "fsdp2-hybrid": ["fsdp2"]}
    strategies = [request.strategy, *stronger.get(request.strategy, [])]
    # Every micro-batch that keeps the global batch, nearest to the requested one first (fewer accumulation steps
    # can fit where more cannot: FSDP2 holds whole gradients while it accumulates).
    per_rank = base.global_batch // request.world_size
    micros = [m for m in range(1, per_rank + 1) if per_rank % m == 0]
    micros.sort(key=lambda m: (abs(math.log(m / base.micro_batch)), -m))
    for m in micros:
        for strategy in strategies:
            for checkpointing in dict.fromkeys([base.gradient_checkpointing, True]):
                candidate = replace(
                    request, strategy=strategy, gradient_checkpointing=checkpointing, micro_batch=m,
                    grad_accumulation=per_rank // m, global_batch=base.global_batch,
                )  # fmt: skip
                plan = plan_train(candidate)
                if plan.fits:
                    return plan
    return None
