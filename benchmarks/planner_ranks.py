"""One rank of the planner's multi-process check (run by bench_planner.py through torchrun): a tiny-preset stage
step under FSDP2 (the CPU test config's units) on gloo, measured by LiveTensorMemory, printed as JSON by rank 0.

    PYTHONPATH=. python -m torch.distributed.run --nproc_per_node 2 benchmarks/planner_ranks.py STAGE MICRO T K CKPT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from infimm_hd.planning.live_memory import LiveTensorMemory, model_state_tensors
from infimm_hd.planning.rehearsal import wrap_like_the_loop
from infimm_hd.training.recipe import STAGES

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "accelerate_cpu_fsdp.yaml"


def main() -> None:
    stage, micro, text, crops, ckpt = (int(x) for x in sys.argv[1:6])
    dist.init_process_group("gloo")
    from bench_planner import batch_of, stage_model, training_step  # the one-process points' model and step

    model = wrap_like_the_loop(stage_model("tiny", stage, bool(ckpt)), stage, CONFIG, dist.get_rank())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    batch = batch_of(model.config, micro, text, crops, STAGES[stage].window_size)
    training_step(model, optimizer, batch)
    with LiveTensorMemory(model_state_tensors(model, optimizer)) as memory:
        training_step(model, optimizer, batch)
    peaks = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, memory.peak_bytes)
    if dist.get_rank() == 0:
        print(json.dumps({"peaks": peaks}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
