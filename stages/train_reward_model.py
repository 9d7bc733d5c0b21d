"""Train a reward model: a Hugging Face `AutoModelForSequenceClassification` (one output) with the Bradley-Terry loss
on preference pairs, for the `rlhf` objective's `reward=FOLDER` option.

    python -m data_prep.rlhf preferences --input pairs.jsonl --out data/prefs          # or data_prep.synthetic
    python -m stages.train_reward_model --base tiny --shards 'data/prefs/train-*.tar' \\
        --heldout 'data/prefs/heldout-*.tar' --output runs/reward-model --max-steps 200       # CPU, a minute
    python -m stages.train_reward_model --base smollm2-135m --shards ... --output runs/rm-smollm2
    python -m stages.stage4_instruction_tuning --objective rlhf --objective-option reward=runs/reward-model ...

The classifier's trunk is the base's LLM (`tiny`, `smollm2-135m`, or an InfiMM-HD model folder such as a stage's
`final/`: its LLM without the cross-attention blocks) with a new linear score head; it reads text only. Each pair is
scored on exactly the text the `rlhf` objective will show it: the prompt as the house chat template renders it for
generation, decoded without special tokens (`<image>`, BOS), followed by the decoded assistant turn. Output: the
model and tokenizer (`save_pretrained`, safetensors), `train_log.jsonl` and `metrics.json` (held-out loss and pairwise
accuracy before and after training).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch
import webdataset as wds
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from infimm_hd.objectives.reward_model import bradley_terry_loss, score_texts
from infimm_hd.training.data import expand_shards


def load_base(base: str, seed: int):
    """(InfiMM-HD model, processor) for a preset name or a model folder."""
    import infimm_hd

    if Path(base).is_dir():
        folder = Path(base)
        return infimm_hd.InfiMMHDForConditionalGeneration.from_pretrained(
            folder
        ), infimm_hd.InfiMMHDProcessor.from_pretrained(folder)
    return infimm_hd.build_model(base, seed=seed)


def reward_classifier(vlm, pad_token_id: int, seed: int) -> PreTrainedModel:
    """A sequence classifier (num_labels=1) whose trunk is `vlm`'s LLM without the cross-attention blocks (a strict
    state-dict load: every trunk weight is consumed and filled) and whose score head is new."""
    config = copy.deepcopy(vlm.config.text_config)
    config.num_labels, config.pad_token_id = 1, pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    prefix = model.base_model_prefix + "."
    trunk = {
        key.removeprefix(prefix).replace(".decoder_layer.", "."): value
        for key, value in vlm.language_model.state_dict().items()
        if key.startswith(prefix) and ".cross_attn." not in key
    }
    model.base_model.load_state_dict(trunk, strict=True)
    return model


def preference_texts(record: dict, processor) -> tuple[str, str]:
    """(chosen text, rejected text) of a "preference" record, as the `rlhf` objective will score them."""
    tok = processor.tokenizer

    def plain(text: str) -> str:  # what decoding generated / prompt tokens gives: special tokens dropped
        return tok.decode(tok(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)

    messages = record["messages"]
    prompt = plain(processor.apply_chat_template(messages[:-1], add_generation_prompt=True))
    texts = []
    for final in (messages[-1], record["rejected"][0]):
        full = plain(processor.apply_chat_template(messages[:-1] + [final]))
        if not full.startswith(prompt):
            raise ValueError(f"record {record['id']!r}: the template does not render the answer after the prompt")
        texts.append(full)
    return texts[0], texts[1]


def read_pairs(patterns: list[str], processor) -> list[tuple[str, str]]:
    """Every preference record of the shards as a (chosen, rejected) text pair; other records are skipped."""
    pairs = []
    for sample in wds.DataPipeline(wds.SimpleShardList(expand_shards(patterns)), wds.tarfile_to_samples()):
        record = json.loads(sample["json"])
        if record.get("task") == "preference":
            pairs.append(preference_texts(record, processor))
    if not pairs:
        raise ValueError(f"no preference records in {patterns}; build them with `python -m data_prep.rlhf preferences`")
    return pairs


@torch.no_grad()
def evaluate(model, tok, pairs, batch_size: int, max_length: int | None) -> dict[str, float]:
    """Held-out Bradley-Terry loss and pairwise accuracy (chosen scored above rejected)."""
    was_training = model.training
    model.eval()
    losses, correct = [], 0.0
    for start in range(0, len(pairs), batch_size):
        chosen, rejected = zip(*pairs[start : start + batch_size], strict=True)
        scores = score_texts(model, tok, list(chosen) + list(rejected), max_length=max_length)
        loss, accuracy = bradley_terry_loss(scores[: len(chosen)], scores[len(chosen) :])
        losses.append(float(loss) * len(chosen))
        correct += float(accuracy) * len(chosen)
    model.train(was_training)
    return {"loss": sum(losses) / len(pairs), "accuracy": correct / len(pairs)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="tiny", help="tiny | smollm2-135m | an InfiMM-HD model folder")
    p.add_argument("--shards", nargs="+", required=True, help="training preference shards (paths/globs)")
    p.add_argument("--heldout", nargs="+", default=None, help="held-out preference shards (default: none)")
    p.add_argument("--output", type=Path, default=Path("runs/reward-model"))
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="TRL RewardTrainer's default")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--center-coef", type=float, default=0.0, help="c * mean((r_c + r_r)^2) keeps scores near 0")
    p.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Train, save the reward model folder, return it."""
    args = build_parser().parse_args(argv)
    vlm, processor = load_base(args.base, args.seed)
    tok = processor.tokenizer
    if tok.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; the reward model pools the last non-pad token")
    model = reward_classifier(vlm, tok.pad_token_id, args.seed).to(args.device).train()
    del vlm
    train_pairs = read_pairs(args.shards, processor)
    heldout = read_pairs(args.heldout, processor) if args.heldout else []
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / "train_log.jsonl", "w") as log:
        before = evaluate(model, tok, heldout, args.batch_size, args.max_length) if heldout else {}
        print(f"{len(train_pairs)} training pairs, {len(heldout)} held-out; held-out before: {before}", flush=True)
        rng, order, start = random.Random(args.seed), [], time.time()
        for step in range(1, args.max_steps + 1):
            if len(order) < args.batch_size:  # reshuffle every epoch
                order += rng.sample(range(len(train_pairs)), len(train_pairs))
            chosen, rejected = zip(*(train_pairs[i] for i in order[: args.batch_size]), strict=True)
            del order[: args.batch_size]
            scores = score_texts(model, tok, list(chosen) + list(rejected), max_length=args.max_length)
            loss, accuracy = bradley_terry_loss(
                scores[: len(chosen)], scores[len(chosen) :], center_coef=args.center_coef
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            optimizer.step()
            record = {"step": step, "loss": loss.item(), "accuracy": accuracy.item(), "grad_norm": grad_norm}
            if heldout and (step % args.eval_every == 0 or step == args.max_steps):
                record |= {
                    f"heldout/{k}": v
                    for k, v in evaluate(model, tok, heldout, args.batch_size, args.max_length).items()
                }
                print(f"step {step}: {record} ({time.time() - start:.0f}s)", flush=True)
            log.write(json.dumps(record) + "\n")
    after = evaluate(model, tok, heldout, args.batch_size, args.max_length) if heldout else {}
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(args.output, safe_serialization=True)
    tok.save_pretrained(args.output)
    metrics = {
        "heldout_before": before,
        "heldout_after": after,
        "train_pairs": len(train_pairs),
        "steps": args.max_steps,
    }
    (args.output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"saved the reward model to {args.output}: {metrics}", flush=True)
    return args.output


if __name__ == "__main__":
    main()
