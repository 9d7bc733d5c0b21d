"""Train the tiny preset on the stand-in batches: the subprocess the distributed and SIGKILL tests launch.

    python tests/helpers/train_tiny.py --output-dir /tmp/run --max-steps 4                       # one process
    ACCELERATE_USE_CPU=1 accelerate launch --config_file tests/helpers/accelerate_cpu_ddp.yaml \
        tests/helpers/train_tiny.py --output-dir /tmp/run --max-steps 4 --grad-accumulation 1   # DDP, 2 processes
    ACCELERATE_USE_CPU=1 accelerate launch --config_file tests/helpers/accelerate_cpu_fsdp.yaml \
        tests/helpers/train_tiny.py --output-dir /tmp/run --max-steps 4 --grad-accumulation 1   # FSDP2, 2 processes

Trains the cross-attention blocks and the token embeddings; every third micro-batch is text-only, so under DDP/FSDP
one rank can hold a text-only batch (no vision tower, no cross-attention) while the other has images. Each rank reads
its own share of the global batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.helpers`

import infimm_hd  # noqa: E402
from infimm_hd.objectives import SFTObjective  # noqa: E402
from infimm_hd.training import checkpoint  # noqa: E402
from infimm_hd.training.config import TrainConfig  # noqa: E402
from infimm_hd.training.loop import make_accelerator, train  # noqa: E402
from infimm_hd.training.trainable import TrainableSpec, apply_trainable  # noqa: E402
from tests.helpers.standin_batches import StandInBatches  # noqa: E402


def pause_saves_after(step: int, seconds: float) -> None:
    """Make checkpoints after `step` stall mid-write (after their first file), so a test can SIGKILL the run while
    a `.tmp-step-*` folder is half written."""
    write_json = checkpoint.write_json

    def slow_write_json(path: Path, obj) -> None:
        write_json(path, obj)
        folder = path.parent if path.parent.name.startswith(checkpoint.TMP_PREFIX) else path.parent.parent
        if folder.name.startswith(checkpoint.TMP_PREFIX + "step-") and int(folder.name.split("-")[-1]) > step:
            print(f"pausing inside {folder.name}", flush=True)
            time.sleep(seconds)

    checkpoint.write_json = slow_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--grad-accumulation", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="per rank and micro-batch")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--pause-saves-after", type=int, default=None, help="test hook: stall later checkpoint writes")
    parser.add_argument("--crash-at-position", type=int, default=None, help="test hook: the data source raises there")
    args = parser.parse_args()

    if args.pause_saves_after is not None:
        pause_saves_after(args.pause_saves_after, seconds=60)
    config = TrainConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        learning_rate=1e-3,
        min_learning_rate=1e-4,
        warmup_steps=1,
        grad_accumulation=args.grad_accumulation,
        mixed_precision=args.mixed_precision,
        save_every=args.save_every,
        keep_last=10,
        log_every=1,
        deterministic=True,
        tensorboard=False,
    )
    accelerator = make_accelerator(config)
    model, processor = infimm_hd.build_model("tiny", seed=0)
    apply_trainable(model, TrainableSpec(cross_attention=True, embeddings=True))
    batches = StandInBatches(
        model.config.image_token_id,
        batch_size=args.batch_size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        fail_at=args.crash_at_position,
        text_only_every=3,
    )
    helper = {"script": "tests/helpers/train_tiny.py", "batch_size": args.batch_size}
    train(
        model,
        batches,
        SFTObjective(),
        config,
        accelerator=accelerator,
        processor=processor,
        extra_config={"helper": helper},
    )


if __name__ == "__main__":
    main()
