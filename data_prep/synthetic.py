"""Synthetic high-resolution VQA: tiny digits in the corners of large canvases, 5x7 clean pixels in a 448 px window
but a blurred ~2x2 px blob in the 448 px thumbnail. The demo trains on it to show what the windows add.

    python -m data_prep.synthetic --out data/synthetic
    python -m data_prep.synthetic --out /tmp/synthetic-tiny --num-images-train 64 --num-images-heldout 16 \\
        --tasks vqa cot --grids 3x3 2x3 --workers 2

Each image (`corner_glyphs.render_sample`: a gradient or photo canvas of rows x cols windows with 5x7 px digits on
plates in 1-4 corners) is written once per task, with one record per task and image:

    vqa         "What digit is in the top-left corner?" -> "7" (qtype digit), "What colour is the digit in the
                top-left corner?" -> "red" (colour), "How many corners have a digit?" -> "3" (count); --qtype-mix
    caption     "A photo with a red 7 in the top-left corner and a blue 2 in the bottom-right corner."
    cot         "What is the sum of the digits in the top-left and bottom-right corners?" -> "The top-left digit is
                3. The bottom-right digit is 5. 3 + 5 = 8.\\nThe answer is 8." (`cot.format_cot`); answer "8". With
                one digit: "What is twice the digit ...". Plus text-only GSM8K-style word problems (--word-problems
                per image), all what Masked Thought trains on
    prompt      the digit question with no assistant turn; answer = the digit (rule-reward RLHF)
    preference  the digit question; chosen = the digit, rejected = a different digit

Splits "train" and "heldout" come from disjoint seed streams, every image and record from its own
`numpy.random.SeedSequence([seed, split, kind, index])`: the same arguments give byte-identical shards whatever
--workers, and --tasks only selects what is written. Layout: OUT/<task>/<split>-%05d.tar + OUT/manifest.json
(counts per task, split and qtype; sha256 per shard). Re-running with the same arguments does nothing.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cli import script_parser
from .corner_glyphs import CORNERS, DEFAULT_GRIDS, PALETTE, corner_box, preload_photos, render_sample
from .cot import format_cot
from .shards import EncodedImage, Log, Sample, build, image_part, make_record, message, text_part
from .word_problems import word_problem

__all__ = ["CORNERS", "DEFAULT_GRIDS", "PALETTE", "SyntheticOptions", "corner_box", "generate", "render_sample"]

TASKS = ("vqa", "caption", "cot", "prompt", "preference")
SPLITS = ("train", "heldout")
QTYPES = ("digit", "colour", "count", "pattern")
DIGIT_QUESTION = "What digit is in the {corner} corner?"
COLOUR_QUESTION = "What colour is the digit in the {corner} corner?"
COUNT_QUESTION = "How many corners have a digit?"
PATTERN_QUESTION = "What pattern fills the square?"  # horizontal | vertical | checkered | plain (needs --pattern)
CAPTION_PROMPT = "Describe the image briefly."
_IMAGE_STREAM, _WORD_STREAM = 0, 1  # the `kind` in a seed: images and word problems never share a stream


@dataclass(frozen=True)
class SyntheticOptions:
    """Everything that determines the output of `generate` (and so its manifest's `arguments`)."""

    num_images_train: int = 2000
    num_images_heldout: int = 200
    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    grids: tuple[tuple[int, int], ...] = DEFAULT_GRIDS
    glyph_scale: int = 1
    margin: int = 8
    plate_margin: int = 2
    min_corners: int = 1
    max_corners: int = 4
    photo_fraction: float = 0.5
    qtype_mix: tuple[float, ...] = (0.7, 0.15, 0.15, 0.0)  # digit, colour, count, pattern
    pattern: bool = False  # draw a fine-pattern square in every image (`corner_glyphs.draw_pattern`)
    word_problems: float = 1.0  # text-only cot problems per image
    image_format: str = "png"
    shard_size: int = 500

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        object.__setattr__(self, "tasks", tuple(t for t in TASKS if t in self.tasks) + tuple(unknown))
        object.__setattr__(self, "grids", tuple((int(r), int(c)) for r, c in self.grids))
        mix = tuple(float(w) for w in self.qtype_mix)
        object.__setattr__(self, "qtype_mix", mix + (0.0,) if len(mix) == len(QTYPES) - 1 else mix)
        problems = []
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            problems.append(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if not self.grids or any(r < 1 or c < 1 for r, c in self.grids):
            problems.append(f"grids must be (rows, cols) pairs >= 1, got {self.grids}")
        if not 1 <= self.min_corners <= self.max_corners <= 4:
            problems.append(f"need 1 <= min_corners <= max_corners <= 4, got {self.min_corners}, {self.max_corners}")
        if self.glyph_scale < 1 or self.margin < 0 or self.plate_margin < 0:
            problems.append("glyph_scale must be >= 1, margin and plate_margin >= 0")
        right, bottom = corner_box(0, 0, "top-left", self.glyph_scale, self.margin, self.plate_margin)[2:]
        if 2 * max(right, bottom) > 448:
            problems.append("margin + plate must fit twice into a 448 px side (corners would overlap)")
        if not 0.0 <= self.photo_fraction <= 1.0:
            problems.append(f"photo_fraction must be in [0, 1], got {self.photo_fraction}")
        if len(self.qtype_mix) != len(QTYPES) or min(self.qtype_mix) < 0 or sum(self.qtype_mix) <= 0:
            problems.append(f"qtype_mix must be {len(QTYPES)} weights >= 0 for {QTYPES}, got {self.qtype_mix}")
        if len(self.qtype_mix) == len(QTYPES) and self.qtype_mix[QTYPES.index("pattern")] > 0 and not self.pattern:
            problems.append("pattern questions (qtype_mix weight > 0) need pattern=True (--pattern)")
        if self.image_format not in ("png", "jpg"):
            problems.append(f"image_format must be png or jpg, got {self.image_format!r}")
        if min(self.num_images_train, self.num_images_heldout, self.seed, self.word_problems) < 0:
            problems.append("image counts, seed and word_problems must be >= 0")
        if self.shard_size < 1:
            problems.append(f"shard_size must be >= 1, got {self.shard_size}")
        if problems:
            raise ValueError("; ".join(problems))

    def render_kwargs(self) -> dict[str, Any]:
        keys = ("grids", "glyph_scale", "margin", "plate_margin", "photo_fraction", "min_corners", "max_corners")
        keys += ("pattern",)
        return {k: getattr(self, k) for k in keys}

    def arguments(self) -> dict[str, Any]:
        return asdict(self)


# -- one image -> records ------------------------------------------------------------------------------------------


def _streams(seed: int, split: str, kind: int, index: int, n: int) -> list[np.random.Generator]:
    children = np.random.SeedSequence([seed, SPLITS.index(split), kind, index]).spawn(n)
    return [np.random.default_rng(s) for s in children]


def _render_encoded(job: tuple[int, str, int, dict[str, Any], str]) -> tuple[bytes, dict[str, Any]]:
    """Worker: render image `index` of `split` and encode it (PNG at zlib level 1: lossless, several times faster
    than the default level 6 on these canvases for files about a fifth larger)."""
    seed, split, index, render_kwargs, image_format = job
    rng = _streams(seed, split, _IMAGE_STREAM, index, 1 + len(TASKS))[0]
    image, truth = render_sample(rng, **render_kwargs)
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format="JPEG", quality=95)
    return out.getvalue(), truth


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption_text(truth: dict[str, Any]) -> str:
    """'A photo with a red 7 in the top-left corner and a blue 2 in the bottom-right corner.'"""
    opening = "A photo" if truth["background"] == "photo" else "A colour gradient"
    glyphs = [f"a {g['colour']} {g['digit']} in the {corner} corner" for corner, g in truth["corners"].items()]
    return f"{opening} with {_join(glyphs)}."


def vqa_question(truth: dict[str, Any], rng: np.random.Generator, mix: Sequence[float]) -> tuple[str, str, str, str]:
    """(qtype, question, answer, corner) for one image; questions only ever ask about corners that hold a digit."""
    weights = np.asarray(mix, dtype=float) / sum(mix)
    qtype = QTYPES[int(rng.choice(len(QTYPES), p=weights))]
    corners = list(truth["corners"])
    corner = corners[int(rng.integers(len(corners)))]
    glyph = truth["corners"][corner]
    if qtype == "digit":
        return qtype, DIGIT_QUESTION.format(corner=corner), str(glyph["digit"]), corner
    if qtype == "colour":
        return qtype, COLOUR_QUESTION.format(corner=corner), glyph["colour"], corner
    if qtype == "pattern":
        return qtype, PATTERN_QUESTION, truth["pattern"]["kind"], ""
    return qtype, COUNT_QUESTION, str(len(corners)), ""


def cot_question(truth: dict[str, Any], rng: np.random.Generator) -> tuple[str, str, str, str]:
    """(qtype, question, reasoning, final): the sum of two corners' digits, or twice the only digit."""
    corners = list(truth["corners"])
    if len(corners) == 1:
        (corner,) = corners
        d = truth["corners"][corner]["digit"]
        question = f"What is twice the digit in the {corner} corner?"
        return "double", question, f"The {corner} digit is {d}. 2 x {d} = {2 * d}.", str(2 * d)
    picked = sorted(rng.choice(len(corners), size=2, replace=False).tolist())
    a, b = corners[picked[0]], corners[picked[1]]
    da, db = truth["corners"][a]["digit"], truth["corners"][b]["digit"]
    question = f"What is the sum of the digits in the {a} and {b} corners?"
    reasoning = f"The {a} digit is {da}. The {b} digit is {db}. {da} + {db} = {da + db}."
    return "sum", question, reasoning, str(da + db)


def image_records(
    truth: dict[str, Any], split: str, index: int, opts: SyntheticOptions
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(task, record) for every selected task of one image; each task draws from its own stream."""
    streams = _streams(opts.seed, split, _IMAGE_STREAM, index, 1 + len(TASKS))
    rngs = dict(zip(TASKS, streams[1:], strict=True))
    record_id = f"{split}-{index:06d}"
    base = {"source": "data_prep.synthetic", "split": split, "index": index, "truth": truth}

    def user(text: str) -> dict[str, Any]:
        return message("user", image_part(), text_part(text))

    for task in opts.tasks:
        rng = rngs[task]
        if task == "vqa":
            qtype, question, answer, corner = vqa_question(truth, rng, opts.qtype_mix)
            messages = [user(question), message("assistant", text_part(answer))]
            yield task, make_record(record_id, task, messages, answer, meta={**base, "qtype": qtype, "corner": corner})
        elif task == "caption":
            caption = caption_text(truth)
            messages = [user(CAPTION_PROMPT), message("assistant", text_part(caption))]
            yield task, make_record(record_id, task, messages, caption, meta=base)
        elif task == "cot":
            qtype, question, reasoning, final = cot_question(truth, rng)
            messages = [user(question), message("assistant", text_part(format_cot(reasoning, final)))]
            yield task, make_record(record_id, task, messages, final, meta={**base, "qtype": qtype})
        else:  # "prompt" and "preference": the digit question
            _, question, answer, corner = vqa_question(truth, rng, (1.0, 0.0, 0.0, 0.0))
            meta = {**base, "qtype": "digit", "corner": corner}
            if task == "prompt":
                yield task, make_record(record_id, task, [user(question)], answer, meta=meta)
            else:
                wrong = str((int(answer) + int(rng.integers(1, 10))) % 10)
                messages = [user(question), message("assistant", text_part(answer))]
                rejected = [message("assistant", text_part(wrong))]
                yield task, make_record(record_id, task, messages, answer, rejected=rejected, meta=meta)


def word_problem_record(split: str, index: int, seed: int) -> dict[str, Any]:
    """Text-only "cot" record `index` of `split`."""
    problem = word_problem(_streams(seed, split, _WORD_STREAM, index, 1)[0])
    final = str(problem.answer)
    messages = [
        message("user", text_part(problem.question)),
        message("assistant", text_part(format_cot("\n".join(problem.steps), final))),
    ]
    meta = {"source": "data_prep.synthetic", "split": split, "index": index, "qtype": "word_problem"}
    return make_record(f"{split}-word-{index:06d}", "cot", messages, final, meta={**meta, "template": problem.template})


# -- the whole set ---------------------------------------------------------------------------------------------------


def _samples(opts: SyntheticOptions, workers: int, stats: dict[str, int]) -> Iterator[Sample]:
    """Every sample in writing order: per split, image i's records (then word problem i), rendered in parallel."""
    counts = {"train": opts.num_images_train, "heldout": opts.num_images_heldout}
    jobs = [(opts.seed, s, i, opts.render_kwargs(), opts.image_format) for s in SPLITS for i in range(counts[s])]
    pool = None
    if workers > 1 and len(jobs) > 1:
        if opts.photo_fraction > 0:
            preload_photos()  # before the fork, so workers share them
        # fork on Linux: workers start at once with the parent's imports (spawn would re-import infimm_hd, ~8 s per
        # worker); they only run numpy/PIL, so a parent that already used torch threads is no problem.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
    try:
        rendered = pool.imap(_render_encoded, jobs, chunksize=4) if pool else map(_render_encoded, jobs)
        for split in SPLITS:
            n_images = counts[split]
            n_words = round(opts.word_problems * n_images) if "cot" in opts.tasks else 0
            for i in range(max(n_images, n_words)):
                if i < n_images:
                    data, truth = next(rendered)
                    stats["images"] += 1
                    image = EncodedImage(data, opts.image_format)
                    for _, record in image_records(truth, split, i, opts):
                        yield Sample(record, [image], split)
                if i < n_words:
                    yield Sample(word_problem_record(split, i, opts.seed), [], split)
    finally:
        if pool is not None:
            pool.terminate()


def generate(
    out_dir: str | Path, *, workers: int | None = None, force: bool = False, log: Log = print, **options: Any
) -> dict[str, Any]:
    """Write the synthetic set to `out_dir` (see the module docstring) and return its manifest.

    `options` are the fields of `SyntheticOptions`; `workers` (default: all CPUs) only changes the speed.
    """
    opts = SyntheticOptions(**options)
    workers = workers or os.cpu_count() or 1
    stats = {"images": 0}
    start = time.perf_counter()
    manifest = build(
        Path(out_dir),
        script="data_prep.synthetic",
        arguments=opts.arguments(),
        inputs={},
        samples=_samples(opts, workers, stats),
        shard_size=opts.shard_size,
        by_task=True,
        force=force,
        log=log,
    )
    if stats["images"]:
        seconds = time.perf_counter() - start
        log(f"rendered and wrote {stats['images']} images in {seconds:.1f}s ({stats['images'] / seconds:.1f} images/s)")
    return manifest


def _grid(text: str) -> tuple[int, int]:
    rows, _, cols = text.lower().partition("x")
    return int(rows), int(cols)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser("data_prep.synthetic", __doc__)
    d = SyntheticOptions()
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-images-train", type=int, default=d.num_images_train)
    parser.add_argument("--num-images-heldout", type=int, default=d.num_images_heldout)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), metavar="TASK", help=f"of {TASKS}")
    parser.add_argument("--grids", nargs="+", type=_grid, default=list(d.grids), help="ROWSxCOLS of 448 px windows")
    parser.add_argument("--glyph-scale", type=int, default=d.glyph_scale, help="pixels per font dot")
    parser.add_argument("--margin", type=int, default=d.margin, help="plate distance from the canvas edges, px")
    parser.add_argument("--plate-margin", type=int, default=d.plate_margin, help="plate border around the glyph, px")
    parser.add_argument("--corners", nargs=2, type=int, default=[d.min_corners, d.max_corners], metavar=("MIN", "MAX"))
    parser.add_argument("--photo-fraction", type=float, default=d.photo_fraction)
    parser.add_argument("--qtype-mix", nargs="+", type=float, default=list(d.qtype_mix), help=f"weights of {QTYPES}")
    parser.add_argument("--pattern", action="store_true", help="draw a fine-pattern square in every image")
    parser.add_argument("--word-problems", type=float, default=d.word_problems, help="text-only cot problems/image")
    parser.add_argument("--image-format", choices=["png", "jpg"], default=d.image_format, help="jpg smears 1px glyphs")
    parser.add_argument("--shard-size", type=int, default=d.shard_size, help="max samples per shard")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: all CPUs)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the output is up to date")
    args = parser.parse_args(argv)
    try:
        opts = SyntheticOptions(
            num_images_train=args.num_images_train,
            num_images_heldout=args.num_images_heldout,
            seed=args.seed,
            tasks=tuple(args.tasks),
            grids=tuple(args.grids),
            glyph_scale=args.glyph_scale,
            margin=args.margin,
            plate_margin=args.plate_margin,
            min_corners=args.corners[0],
            max_corners=args.corners[1],
            photo_fraction=args.photo_fraction,
            qtype_mix=tuple(args.qtype_mix),
            pattern=args.pattern,
            word_problems=args.word_problems,
            image_format=args.image_format,
            shard_size=args.shard_size,
        )
    except ValueError as e:
        parser.error(str(e))
    return generate(args.out, workers=args.workers, force=args.force, **opts.arguments())


if __name__ == "__main__":
    main()
