"""Evaluation: standard benchmarks scored as their official scorers do, and the demo's exact-match VQA.

* `exact_match.py`: `evaluate_vqa` on our own shards (the demo's thumbnail-vs-windows comparison).
* `samples.py`, `benchmark.py`, `benchmarks/`: each public benchmark read from its published files into
  `EvalSample`s, with its prompt, metric and summary (`BENCHMARKS`, `get_benchmark`).
* `metrics/`: the official metrics (VQA accuracy, ANLS, relaxed accuracy, MMMU parsing, MME, POPE, MMBench).
* `runner.py`: batched, resumable, data-parallel generation over a benchmark -> predictions JSONL + summary.
"""

from .exact_match import VQAResult, evaluate_vqa, final_answer, normalize_answer, score_answer

__all__ = ["VQAResult", "evaluate_vqa", "final_answer", "normalize_answer", "score_answer"]
