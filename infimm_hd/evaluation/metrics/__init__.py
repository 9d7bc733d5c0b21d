"""Official benchmark metrics as pure functions (no numpy / torch), each reproducing an official scorer or its
lmms-eval port exactly, quirks included; see each module's docstring for the script it follows.

| benchmark | function | module |
| --- | --- | --- |
| VQAv2, OK-VQA, TextVQA, VizWiz | `vqa_accuracy` | vqa_accuracy |
| DocVQA, InfographicVQA, IconQA (lmms-eval) | `anls` | anls |
| ChartQA | `relaxed_correctness`, `relaxed_accuracy` | relaxed_accuracy |
| MMMU | `parse_multi_choice_response`, `parse_open_response`, `eval_multi_choice`, `eval_open` | multiple_choice |
| ScienceQA(-IMG) | `scienceqa_match` | multiple_choice |
| MMBench | `mmbench_extract_answer`, `circular_accuracy` | multiple_choice |
| MME | `parse_pred_ans`, `mme_scores` | mme |
| POPE | `pope_parse_answer`, `pope_metrics`, `pope_metrics_by_split` | pope |
| GQA | `gqa_accuracy`, `exact_match` | exact_match |
"""

from .anls import anls, levenshtein_distance, normalized_levenshtein
from .answer_normalization import (
    evalai_normalize,
    process_digit_article,
    process_punctuation,
    vqa_script_normalize,
)
from .exact_match import exact_match, gqa_accuracy
from .mme import COGNITION_SUBTASKS, PERCEPTION_SUBTASKS, MmeScores, MmeSubtaskScore, mme_scores, parse_pred_ans
from .multiple_choice import (
    circular_accuracy,
    circular_results,
    eval_multi_choice,
    eval_open,
    extract_numbers,
    get_multi_choice_info,
    mmbench_can_infer_option,
    mmbench_can_infer_text,
    mmbench_extract_answer,
    mmmu_is_correct,
    normalize_str,
    parse_multi_choice_response,
    parse_open_response,
    scienceqa_match,
)
from .pope import POPE_SPLITS, PopeMetrics, pope_metrics, pope_metrics_by_split, pope_parse_answer
from .relaxed_accuracy import relaxed_accuracy, relaxed_correctness
from .vqa_accuracy import leave_one_out_accuracy, vqa_accuracy

__all__ = [
    "COGNITION_SUBTASKS",
    "PERCEPTION_SUBTASKS",
    "POPE_SPLITS",
    "MmeScores",
    "MmeSubtaskScore",
    "PopeMetrics",
    "anls",
    "circular_accuracy",
    "circular_results",
    "eval_multi_choice",
    "eval_open",
    "evalai_normalize",
    "exact_match",
    "extract_numbers",
    "get_multi_choice_info",
    "gqa_accuracy",
    "leave_one_out_accuracy",
    "levenshtein_distance",
    "mmbench_can_infer_option",
    "mmbench_can_infer_text",
    "mmbench_extract_answer",
    "mme_scores",
    "mmmu_is_correct",
    "normalize_str",
    "normalized_levenshtein",
    "parse_multi_choice_response",
    "parse_open_response",
    "parse_pred_ans",
    "pope_metrics",
    "pope_metrics_by_split",
    "pope_parse_answer",
    "process_digit_article",
    "process_punctuation",
    "relaxed_accuracy",
    "relaxed_correctness",
    "scienceqa_match",
    "vqa_accuracy",
    "vqa_script_normalize",
]
