"""The embedded default: synthetic high-resolution data, the four stages, evaluation, one real photo (CPU, offline).

    python -m stages.demo                 # about 12 minutes on a 2-core CPU (the README's `make demo`)
    python -m stages.demo --quick         # a 2-minute smoke run of the same pipeline

1. `data_prep.synthetic` writes corner-digit canvases (1344 px on the long side; 5x7 px digits that the 448 px
   thumbnail blurs to ~2 px) with a fine-pattern square (2-px stripes / checks / plain, one mean colour: flat in the
   thumbnail) and VQA (digit and pattern questions), caption and chain-of-thought records, and a held-out split.
2. Stage 0, tiny preset only: the tiny preset's LLM is random, so it first learns the text of the training set
   (questions and answers without images) as a stand-in for the pretraining a real LLM brings; then the paper's
   stages 1-4 run exactly as `stages/stage*.py` do, each reading the previous one's `final/` folder.
3. After every stage the held-out digit and pattern questions are answered twice by the same model: thumbnail only
   (`max_windows=0`) and thumbnail + windows (`max_windows=9`). Then one real photo (scikit-image's astronaut,
   1344x896, with a small digit drawn in a corner, as the paper's augmentation does) is asked about.
Writes `OUT/results.json`, `OUT/results.md` (the table) and `OUT/stage*/loss.png`.

Status (measured 2026-11-25, 11.7 min beside another CPU-heavy job): the pipeline runs end to end, but the model
collapses to one answer per question type (patterns 32% with and without windows, digits 6%; chance 25% / 10%), so
the windows' advantage is not shown yet. Stage 3 alone, started from the base-LLM stage, did read patterns better with
windows than without (49% vs 34%, same model and questions). See the issue notes for what was tried.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from infimm_hd.evaluation import evaluate_vqa
from infimm_hd.training.data import iterate_records
from infimm_hd.training.trainable import TrainableSpec
from stages import (
    stage1_pretrain,
    stage2_continued_pretraining,
    stage3_dynamic_resolution,
    stage4_instruction_tuning,
)
from stages.common import StageSpec, run_stage

STAGES = (stage1_pretrain, stage2_continued_pretraining, stage3_dynamic_resolution, stage4_instruction_tuning)
GRIDS = ((3, 3), (2, 3), (3, 2), (1, 3), (3, 1))  # long side 1344 px: the thumbnail is a 3x downsample
QTYPE_MIX = (0.3, 0.0, 0.0, 0.7)  # digit and fine-pattern questions (data_prep.synthetic.QTYPES)
READ = ("pattern", "digit")  # the question types whose answers need the windows
BASE_LLM = StageSpec(
    number=0,
    name="base LLM text pretraining (tiny preset only)",
    window_size=448,
    max_windows=0,
    trainable=TrainableSpec(language_model=True, embeddings=True),
    data=("text",),
)


@dataclass
class Budget:
    """How much data and how many optimizer steps each stage gets (index = stage number)."""

    images_train: int = 1500
    images_heldout: int = 200
    steps: tuple[int, ...] = (400, 100, 150, 400, 200)
    # Peak learning rates: the new fusion blocks start at gate 0 and learn from ~1e-4 gradients, so stages 0-3 use
    # 3e-3; stage 4 also trains the LLM and keeps the gentler default.
    learning_rates: tuple[float, ...] = (3e-3, 3e-3, 3e-3, 3e-3, 3e-4)
    # float32: the tiny model is cheap, and bf16 rounding of the fusion blocks' first, tiny contributions is the
    # suspected cause of the bf16 runs that did not move (the float32 ones did).
    mixed_precision: str = "no"
    batch_size: int = 8
    num_workers: int = 2
    eval_limit: int = 200
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Budget(images_train=64, images_heldout=24, steps=(10, 3, 3, 6, 3), batch_size=4, num_workers=1, eval_limit=24)


def write_text_shards(data: Path) -> None:
    """`data/text/train-00000.tar`: the training VQA conversations with the image parts removed (text-only records),
    for the tiny preset's base-LLM stage: it learns the questions and the answer vocabulary, not the answers."""
    out = data / "text"
    if (out / "train-00000.tar").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    shards = sorted(str(p) for p in (data / "vqa").glob("train-*.tar"))
    with wds.TarWriter(str(out / "train-00000.tar")) as sink:
        for item in iterate_records(shards):
            record = dict(item.record)
            record["messages"] = [
                {**m, "content": [p for p in m["content"] if p["type"] != "image"]} for m in record["messages"]
            ]
            sink.write({"__key__": f"{record['task']}-{item.key}", "json": json.dumps(record).encode()})


def stage_args(number: int, out: Path, preset: str, budget: Budget, init: Path | None) -> list[str]:
    argv = ["--preset", preset, "--data", str(out / "data"), "--output", str(out / f"stage{number}")]
    argv += ["--max-steps", str(budget.steps[number]), "--batch-size", str(budget.batch_size)]
    argv += ["--learning-rate", str(budget.learning_rates[number]), "--mixed-precision", budget.mixed_precision]
    argv += ["--num-workers", str(budget.num_workers), "--save-every", "50", "--log-every", "10", "--resume", "none"]
    if number >= 2:
        # After stage 1's captions, the VQA records only: at this scale the tiny byte-level LM given long captions
        # and CoT (the stages' full mixes) learns to babble them, which costs more than it teaches in minutes.
        argv += ["--shards", str(out / "data" / "vqa" / "train-*.tar")]
    return argv + (["--init", str(init)] if init is not None else [])


def evaluate(folder: Path, out: Path, budget: Budget) -> dict[str, float]:
    """Digit-question accuracy of the model in `folder`, thumbnail only and with windows."""
    from infimm_hd import InfiMMHDForConditionalGeneration, InfiMMHDProcessor

    model = InfiMMHDForConditionalGeneration.from_pretrained(folder)
    processor = InfiMMHDProcessor.from_pretrained(folder)
    shards = sorted(str(p) for p in (out / "data" / "vqa").glob("heldout-*.tar"))
    scores = {}
    for label, windows in (("thumbnail", 0), ("windows", 9)):
        result = evaluate_vqa(model, processor, shards, max_windows=windows, limit=budget.eval_limit)
        for qtype in READ:
            scores[f"{qtype}/{label}"] = result.type_accuracy(qtype)
            scores[f"{qtype}/questions"] = result.by_type[qtype][1]
    return scores


def real_photo_answer(folder: Path) -> dict[str, Any]:
    """Ask the trained model about scikit-image's astronaut photo with a 5x7 px digit drawn in one corner."""
    from PIL import Image
    from skimage import data as skdata

    from data_prep.corner_glyphs import draw_glyph
    from infimm_hd import InfiMMHDForConditionalGeneration, InfiMMHDProcessor

    model = InfiMMHDForConditionalGeneration.from_pretrained(folder)
    processor = InfiMMHDProcessor.from_pretrained(folder)
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((1344, 896), Image.Resampling.BICUBIC)).copy()
    draw_glyph(photo, "top-right", 4, "red")
    question = "What digit is in the top-right corner?"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    answers = {}
    for label, windows in (("thumbnail", 0), ("windows", 9)):
        inputs = processor.apply_chat_template(
            messages,
            images=[[Image.fromarray(photo)]],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            processor_kwargs={"max_windows": windows},
        )
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        answers[label] = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return {"question": question, "truth": "4", **answers}


def table(rows: list[dict[str, Any]]) -> str:
    head = "| after stage | trains |" + "".join(f" {q}: thumbnail only | {q}: + windows |" for q in READ)
    lines = [head, "|---|---|" + "---|---|" * len(READ)]
    for r in rows:
        cells = "".join(f" {r[f'{q}/thumbnail']:.1%} | {r[f'{q}/windows']:.1%} |" for q in READ)
        lines.append(f"| {r['stage']} | {r['trains']} |{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--preset", default="tiny", choices=["tiny", "smollm2-135m"])
    parser.add_argument("--quick", action="store_true", help="a smoke run of the same pipeline (~2 minutes)")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else Budget()
    out: Path = args.out
    started = time.perf_counter()

    from data_prep.synthetic import generate

    generate(
        out / "data",
        num_images_train=budget.images_train,
        num_images_heldout=budget.images_heldout,
        tasks=("vqa", "caption", "cot"),
        grids=GRIDS,
        pattern=True,
        qtype_mix=QTYPE_MIX,
        workers=2,
    )
    timings = {"data": time.perf_counter() - started}
    rows, init = [], None
    if args.preset == "tiny":
        write_text_shards(out / "data")
        t0 = time.perf_counter()
        init = run_stage(BASE_LLM, stage_args(0, out, args.preset, budget, None), BASE_LLM.name)
        timings["stage0"] = time.perf_counter() - t0
    for module in STAGES:
        spec = module.SPEC
        t0 = time.perf_counter()
        init = module.main(stage_args(spec.number, out, args.preset, budget, init))
        timings[f"stage{spec.number}"] = time.perf_counter() - t0
        scores = evaluate(init, out, budget)
        trains = ", ".join(g.replace("_", " ") for g, on in asdict(spec.trainable).items() if on)
        rows.append({"stage": f"{spec.number} {spec.name}", "trains": trains, **scores})
        print(f"after stage {spec.number}: {scores}", flush=True)
    photo = real_photo_answer(init)
    timings["total"] = time.perf_counter() - started
    results = {"preset": args.preset, "budget": asdict(budget), "stages": rows, "real_photo": photo, "seconds": timings}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = (
        table(rows)
        + f"\n\nChance: pattern 25% (4 kinds), digit 10%. Held-out questions: pattern {rows[-1]['pattern/questions']}, "
        + f"digit {rows[-1]['digit/questions']}."
        + f"\nReal photo (astronaut, 1344x896, red 4 in the top-right corner): {photo['question']} -> thumbnail only "
        + f"{photo['thumbnail']!r}, with windows {photo['windows']!r} (truth {photo['truth']!r})."
        + f"\nTotal {timings['total'] / 60:.1f} min; loss curves in {out}/stage*/loss.png."
    )
    (out / "results.md").write_text(report + "\n")
    print("\n" + report)
    return results


if __name__ == "__main__":
    main()
