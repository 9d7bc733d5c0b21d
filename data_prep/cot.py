"""GSM8K-style chain-of-thought JSONL -> text-only "cot" shards, what the Masked Thought objective trains on.

    python -m data_prep.cot --input gsm8k/train.jsonl --out data/gsm8k
    python -m data_prep.cot --input gsm8k/test.jsonl --out data/gsm8k-test --split test --strip-calculator

Each line is {"question", "answer"} where the answer is the reasoning followed by "\\n#### <final>" (GSM8K). The
record is user = question, assistant = `format_cot(reasoning, final)`, i.e. the reasoning kept exactly, a newline,
then "The answer is <final>."; `answer` = the final answer (thousands commas removed from numbers). Every
thought/answer split in this package goes through `format_cot`, so the objective finds the answer the same way for
GSM8K and for `data_prep.synthetic`. Lines without "####" are skipped and counted in `OUT/manifest.json`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cli import add_input_arguments, add_output_arguments, build_from_args, script_parser
from .shards import (
    Sample,
    Skipped,
    SkipSample,
    jsonl_samples,
    make_record,
    message,
    text_part,
)

ANSWER_PREFIX = "The answer is "
_NUMBER_WITH_COMMAS = re.compile(r"^[-+]?\$?\d{1,3}(,\d{3})+(\.\d+)?$")
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "48/2 = <<48/2=24>>24"


def format_cot(reasoning: str, final: str) -> str:
    """The assistant text of a chain-of-thought record: the thought, a newline, then the answer sentence.

    The answer sentence is always the last line and starts with `ANSWER_PREFIX`, so thought and answer split at the
    last newline.

    >>> format_cot("3 + 5 = 8.", "8")
    '3 + 5 = 8.\\nThe answer is 8.'
    """
    return f"{reasoning.strip()}\n{ANSWER_PREFIX}{final}."


def normalise_final(final: str) -> str:
    """GSM8K's final answer without surrounding space and, for numbers, without thousands commas.

    >>> normalise_final(" 1,234 ")
    '1234'
    >>> normalise_final("red, green")
    'red, green'
    """
    final = final.strip()
    return final.replace(",", "") if _NUMBER_WITH_COMMAS.match(final) else final


def parse_gsm8k_answer(answer: str, strip_calculator: bool = False) -> tuple[str, str]:
    """A GSM8K answer -> (reasoning, final answer); `SkipSample` when it has no "####" line.

    >>> parse_gsm8k_answer("Half of 48 is 24.\\n#### 24")
    ('Half of 48 is 24.', '24')
    """
    reasoning, sep, final = answer.rpartition("####")
    if not sep or not final.strip():
        raise SkipSample("no_final_answer", "no '#### <final>' line")
    if strip_calculator:
        reasoning = _CALCULATOR.sub("", reasoning)
    return reasoning.strip(), normalise_final(final)


def cot_samples(
    path: Path,
    *,
    split: str = "train",
    question_field: str = "question",
    answer_field: str = "answer",
    strip_calculator: bool = False,
) -> Iterator[Sample | Skipped]:
    """The "cot" samples of a GSM8K-style JSONL file, in line order."""

    def convert(row: dict[str, Any], sample_id: str, line: int) -> Sample:
        question, answer = row.get(question_field), row.get(answer_field)
        if not isinstance(question, str) or not question.strip() or not isinstance(answer, str):
            raise SkipSample("missing_field", f"needs string {question_field!r} and {answer_field!r}")
        reasoning, final = parse_gsm8k_answer(answer, strip_calculator)
        messages = [
            message("user", text_part(question)),
            message("assistant", text_part(format_cot(reasoning, final))),
        ]
        meta = {"source": "data_prep.cot", "file": path.name, "line": line}
        return Sample(make_record(sample_id, "cot", messages, answer=final, meta=meta), [], split)

    return jsonl_samples(path, convert)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser("data_prep.cot", __doc__)
    add_input_arguments(parser, "GSM8K-style JSONL")
    parser.add_argument("--question-field", default="question")
    parser.add_argument("--answer-field", default="answer")
    parser.add_argument(
        "--strip-calculator", action="store_true", help="remove GSM8K's <<a*b=c>> annotations from the reasoning"
    )
    add_output_arguments(parser, shard_size=5000)
    args = parser.parse_args(argv)
    options = {
        "question_field": args.question_field,
        "answer_field": args.answer_field,
        "strip_calculator": args.strip_calculator,
    }
    samples = cot_samples(args.input, split=args.split, **options)
    return build_from_args(args, script="data_prep.cot", samples=samples, **options)


if __name__ == "__main__":
    main()
