"""Run a model over a benchmark: batched greedy generation -> per-sample predictions (JSONL) -> summary.

Resumable and data-parallel with one rule: the batches are fixed by the sample order (batch b holds samples
[b * batch_size, (b + 1) * batch_size)), whatever the number of processes and however often the run was killed.
Rank r of W generates the batches b with b % W == r, so a batch is always generated with the same rows and the same
padding, and greedy answers (hence every score and total) are identical to one uninterrupted process. A batch is
written with one `write` + flush + fsync once it is generated; a resumed run keeps every complete line it finds,
drops a torn last line, and regenerates only batches that still miss an answer (writing only the missing ones).

Files in the output folder:
    predictions.rank-00000.jsonl ...  per-process parts while running (any world size can resume them)
    predictions.jsonl                 every sample in benchmark order, written by rank 0 at the end (parts removed)
    summary.json                      the benchmark's summary, the settings, and the prompt instruction
    results.md                        a one-row Markdown table of the headline numbers
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..image_processing import load_image
from .benchmark import Benchmark
from .samples import BenchmarkDataError, EvalSample

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
RESULTS_MD = "results.md"


@dataclass(frozen=True)
class EvalSettings:
    """batch_size: prompts per `generate` call (per process). max_windows: the window budget of the tiling (0 =
    thumbnail only; None = the model's `max_windows_inference`). limit: the first N samples only. max_new_tokens:
    None = the benchmark's own budget."""

    batch_size: int = 8
    max_windows: int | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class Ranks:
    """This process's place among the evaluating processes."""

    rank: int = 0
    world_size: int = 1

    @staticmethod
    def from_environment() -> Ranks:
        """`accelerate launch` / torchrun set RANK and WORLD_SIZE; a plain `python` run is rank 0 of 1."""
        return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def _barrier(ranks: Ranks) -> None:
    """Wait for every evaluating process. Only barriers are needed (results meet in the output folder, which all
    ranks must share), so a gloo group serves on GPU machines too and no accelerate state is required."""
    if ranks.world_size == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # reads MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE from the launcher
    dist.barrier()


def part_path(folder: Path, rank: int) -> Path:
    return folder / f"predictions.rank-{rank:05d}.jsonl"


def read_records(path: Path, benchmark: str, max_windows: int) -> list[dict[str, Any]]:
    """Complete records of one predictions file, checked to belong to this benchmark and window budget.

    A torn last line (a killed write) is ignored; any other bad line, or a record of another benchmark or budget, is
    a `BenchmarkDataError` naming the file and field, raised before anything is written.
    """
    records = []
    lines = path.read_text().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # the unterminated last line: a write cut short
                break
            raise BenchmarkDataError(path, f"line {number} is not JSON ({err})") from None
        for key, want in (("benchmark", benchmark), ("max_windows", max_windows)):
            if record.get(key) != want:
                raise BenchmarkDataError(
                    path,
                    f"line {number} field {key!r} is {record.get(key)!r}, not {want!r}: these predictions belong to "
                    "another run; choose another --output folder (nothing was overwritten)",
                )
        records.append(record)
    return records


def finished_records(folder: Path, benchmark: str, max_windows: int) -> dict[str, dict[str, Any]]:
    """qid -> record over the merged file and every part file of earlier (possibly killed) runs."""
    done: dict[str, dict[str, Any]] = {}
    for path in [folder / PREDICTIONS, *sorted(folder.glob("predictions.rank-*.jsonl"))]:
        if path.is_file():
            done |= {r["qid"]: r for r in read_records(path, benchmark, max_windows)}
    return done


def _open_part(path: Path):
    """Append handle to a part file, first cutting a torn last line so the next record starts on its own line."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a")


def _conversation(benchmark: Benchmark, sample: EvalSample) -> list[dict[str, Any]]:
    return [{"role": "user", "content": benchmark.prompt(sample)}]


def _decoded_images(sample: EvalSample) -> list[Any]:
    """The sample's images decoded, or a `BenchmarkDataError` naming the sample and image that fails."""
    images = []
    for i, ref in enumerate(sample.images):
        try:
            images.append(load_image(ref))
        except Exception as err:  # noqa: BLE001 - any decoder failure is the data's fault, reported with its name
            where = ref if isinstance(ref, str) else f"image {i} ({len(ref)} bytes inline)"
            raise BenchmarkDataError(where, f"question {sample.qid}: cannot decode its image ({err})") from err
    return images


@torch.no_grad()
def generate_answers(
    model, processor, benchmark: Benchmark, samples: Sequence[EvalSample], max_windows: int, max_new_tokens: int
) -> list[str]:
    """Greedy answers to one batch of samples (left-padded by the processor)."""
    inputs = processor.apply_chat_template(
        [_conversation(benchmark, s) for s in samples],
        images=[_decoded_images(s) for s in samples],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"max_windows": max_windows},
    )
    inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [a.strip() for a in processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)]


def _record(benchmark: Benchmark, sample: EvalSample, prediction: str, max_windows: int) -> dict[str, Any]:
    return {
        "benchmark": benchmark.name,
        "max_windows": max_windows,
        "qid": sample.qid,
        "prediction": prediction,
        "references": list(sample.references),
        "scores": benchmark.score(sample, prediction),
        "meta": dict(sample.meta),
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def evaluate_benchmark(
    model,
    processor,
    benchmark: Benchmark,
    data: str | Path,
    output_dir: str | Path,
    settings: EvalSettings = EvalSettings(),
    ranks: Ranks | None = None,
) -> dict[str, Any]:
    """Answer every sample of `benchmark` read from `data`, score each, and summarise; returns `summary.json`'s
    content (on every rank). Re-running with the same `output_dir` resumes; see the module docstring."""
    ranks = ranks or Ranks.from_environment()
    folder = Path(output_dir)
    samples = benchmark.load(Path(data))
    if settings.limit is not None:
        samples = samples[: settings.limit]
    if not samples:
        raise BenchmarkDataError(data, "holds no samples")
    seen: set[str] = set()
    for s in samples:
        if s.qid in seen:
            raise BenchmarkDataError(data, f"question id {s.qid!r} occurs twice (field qid must be unique)")
        seen.add(s.qid)
    max_windows = model.config.max_windows_inference if settings.max_windows is None else settings.max_windows
    max_new_tokens = settings.max_new_tokens or benchmark.max_new_tokens
    # Validate what is there before creating or writing anything.
    done = finished_records(folder, benchmark.name, max_windows) if folder.exists() else {}
    _barrier(ranks)
    folder.mkdir(parents=True, exist_ok=True)

    batches = [samples[i : i + settings.batch_size] for i in range(0, len(samples), settings.batch_size)]
    mine = [b for i, b in enumerate(batches) if i % ranks.world_size == ranks.rank]
    todo = [b for b in mine if any(s.qid not in done for s in b)]
    model.eval()
    bar = None
    if settings.progress and ranks.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(b) for b in todo), desc=f"{benchmark.name} (max_windows={max_windows})")
    with _open_part(part_path(folder, ranks.rank)) as part:
        for batch in todo:
            answers = generate_answers(model, processor, benchmark, batch, max_windows, max_new_tokens)
            lines = [
                json.dumps(_record(benchmark, s, a, max_windows)) + "\n"
                for s, a in zip(batch, answers, strict=True)
                if s.qid not in done
            ]
            part.write("".join(lines))
            part.flush()
            os.fsync(part.fileno())
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    _barrier(ranks)

    if ranks.rank == 0:
        records_by_qid = finished_records(folder, benchmark.name, max_windows)
        missing = [s.qid for s in samples if s.qid not in records_by_qid]
        if missing:
            raise RuntimeError(f"{len(missing)} samples have no prediction after the run (first: {missing[:5]})")
        records = [records_by_qid[s.qid] for s in samples]
        _write_atomic(folder / PREDICTIONS, "".join(json.dumps(r) + "\n" for r in records))
        for path in folder.glob("predictions.rank-*.jsonl"):
            path.unlink()
        summary = {
            "benchmark": benchmark.name,
            "metric": benchmark.metric,
            "scores": benchmark.summarize(records),
            "num_samples": len(records),
            "data": str(data),
            "instruction": benchmark.instruction,
            "settings": asdict(settings) | {"max_windows": max_windows, "max_new_tokens": max_new_tokens},
            "model": str(getattr(model, "name_or_path", "") or ""),
        }
        _write_atomic(folder / SUMMARY, json.dumps(summary, indent=2) + "\n")
        _write_atomic(folder / RESULTS_MD, markdown_table([summary]))
    _barrier(ranks)
    return json.loads((folder / SUMMARY).read_text())


def markdown_table(summaries: Sequence[dict[str, Any]], row_label: str = "max_windows") -> str:
    """Benchmarks as columns (their headline metric), one row per run setting."""
    names = list(dict.fromkeys(s["benchmark"] for s in summaries))
    rows: dict[Any, dict[str, float]] = {}
    for s in summaries:
        rows.setdefault(s["settings"][row_label], {})[s["benchmark"]] = s["scores"][s["metric"]]
    head = f"| {row_label} | " + " | ".join(f"{n} ({_metric_of(summaries, n)})" for n in names) + " |"
    sep = "|---" * (len(names) + 1) + "|"
    body = [f"| {k} | " + " | ".join(f"{v.get(n, float('nan')):.1f}" for n in names) + " |" for k, v in rows.items()]
    return "\n".join([head, sep, *body]) + "\n"


def _metric_of(summaries: Sequence[dict[str, Any]], name: str) -> str:
    return next(s["metric"] for s in summaries if s["benchmark"] == name)
