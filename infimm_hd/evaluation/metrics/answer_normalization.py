"""VQA answer normalisation, reproduced exactly from the two official implementations (quirks included).

Why: every VQA-style accuracy (VQAv2, OK-VQA, TextVQA, VizWiz) compares *normalised* strings, and small differences
in the normalisation move reported scores. Two implementations are in use, and they differ:

* the GT-Vision-Lab VQA script, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (``VQAEval.processPunctuation``
  and ``VQAEval.processDigitArticle``), comma regex ``(\\d)(\\,)(\\d)``;
* the EvalAI port (facebookresearch/mmf ``pythia/tasks/processors.py`` ``EvalAIAnswerProcessor``, copied into
  lmms-eval as ``lmms_eval/tasks/_task_utils/vqa_eval_metric.py``), comma regex ``(?<=\\d)(\\,)+(?=\\d)`` and an extra
  ``word_tokenize`` step (lowercase, drop ``,`` and ``?``, ``'s`` -> `` 's``) that runs first.

Both share one contraction table, number-word map, article list and punctuation list (checked equal entry by entry
and in order), written once below. Quirks reproduced on purpose:

* the "is this punctuation next to a space?" test looks at the ORIGINAL text, not the partly processed one, and a
  digit-comma-digit anywhere in the text makes EVERY punctuation mark be deleted instead of replaced by a space;
* the period regex ``(?!<=\\d)(\\.)(?!\\d)`` is a typo for a look-behind: ``(?!<=\\d)`` is a look-AHEAD for the two
  characters ``<=`` plus a digit, which can never match where a ``.`` starts, so every period not followed by a
  digit is removed (``"3.5"`` keeps its period, ``"3."`` loses it);
* ``periodStrip.sub("", outText, re.UNICODE)`` passes ``re.UNICODE`` as the positional ``count`` argument, so at most
  ``int(re.UNICODE) == 32`` periods are removed per answer;
* number words and articles are matched after ``lower()``, but the contraction table also holds keys with capitals
  (``"Im"``, ``"Ive"``, ``"Id've"``) that therefore never match, and ``"somebody'd"`` maps to ``"somebodyd"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# The contraction table of vqaEval.py, identical (same keys, values and order) to EvalAIAnswerProcessor.CONTRACTIONS.
CONTRACTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "aint": "ain't",
        "arent": "aren't",
        "cant": "can't",
        "couldve": "could've",
        "couldnt": "couldn't",
        "couldn'tve": "couldn't've",
        "couldnt've": "couldn't've",
        "didnt": "didn't",
        "doesnt": "doesn't",
        "dont": "don't",
        "hadnt": "hadn't",
        "hadnt've": "hadn't've",
        "hadn'tve": "hadn't've",
        "hasnt": "hasn't",
        "havent": "haven't",
        "hed": "he'd",
        "hed've": "he'd've",
        "he'dve": "he'd've",
        "hes": "he's",
        "howd": "how'd",
        "howll": "how'll",
        "hows": "how's",
        "Id've": "I'd've",
        "I'dve": "I'd've",
        "Im": "I'm",
        "Ive": "I've",
        "isnt": "isn't",
        "itd": "it'd",
        "itd've": "it'd've",
        "it'dve": "it'd've",
        "itll": "it'll",
        "let's": "let's",
        "maam": "ma'am",
        "mightnt": "mightn't",
        "mightnt've": "mightn't've",
        "mightn'tve": "mightn't've",
        "mightve": "might've",
        "mustnt": "mustn't",
        "mustve": "must've",
        "neednt": "needn't",
        "notve": "not've",
        "oclock": "o'clock",
        "oughtnt": "oughtn't",
        "ow's'at": "'ow's'at",
        "'ows'at": "'ow's'at",
        "'ow'sat": "'ow's'at",
        "shant": "shan't",
        "shed've": "she'd've",
        "she'dve": "she'd've",
        "she's": "she's",
        "shouldve": "should've",
        "shouldnt": "shouldn't",
        "shouldnt've": "shouldn't've",
        "shouldn'tve": "shouldn't've",
        "somebody'd": "somebodyd",  # sic, in both official tables
        "somebodyd've": "somebody'd've",
        "somebody'dve": "somebody'd've",
        "somebodyll": "somebody'll",
        "somebodys": "somebody's",
        "someoned": "someone'd",
        "someoned've": "someone'd've",
        "someone'dve": "someone'd've",
        "someonell": "someone'll",
        "someones": "someone's",
        "somethingd": "something'd",
        "somethingd've": "something'd've",
        "something'dve": "something'd've",
        "somethingll": "something'll",
        "thats": "that's",
        "thered": "there'd",
        "thered've": "there'd've",
        "there'dve": "there'd've",
        "therere": "there're",
        "theres": "there's",
        "theyd": "they'd",
        "theyd've": "they'd've",
        "they'dve": "they'd've",
        "theyll": "they'll",
        "theyre": "they're",
        "theyve": "they've",
        "twas": "'twas",
        "wasnt": "wasn't",
        "wed've": "we'd've",
        "we'dve": "we'd've",
        "weve": "we've",
        "werent": "weren't",
        "whatll": "what'll",
        "whatre": "what're",
        "whats": "what's",
        "whatve": "what've",
        "whens": "when's",
        "whered": "where'd",
        "wheres": "where's",
        "whereve": "where've",
        "whod": "who'd",
        "whod've": "who'd've",
        "who'dve": "who'd've",
        "wholl": "who'll",
        "whos": "who's",
        "whove": "who've",
        "whyll": "why'll",
        "whyre": "why're",
        "whys": "why's",
        "wont": "won't",
        "wouldve": "would've",
        "wouldnt": "wouldn't",
        "wouldnt've": "wouldn't've",
        "wouldn'tve": "wouldn't've",
        "yall": "y'all",
        "yall'll": "y'all'll",
        "y'allll": "y'all'll",
        "yall'd've": "y'all'd've",
        "y'alld've": "y'all'd've",
        "y'all'dve": "y'all'd've",
        "youd": "you'd",
        "youd've": "you'd've",
        "you'dve": "you'd've",
        "youll": "you'll",
        "youre": "you're",
        "youve": "you've",
    }
)

# vqaEval.py `manualMap` == EvalAIAnswerProcessor.NUMBER_MAP.
NUMBER_MAP: Final[Mapping[str, str]] = MappingProxyType(
    {
        "none": "0",
        "zero": "0",
        "one": "1",
        "two": "2",
        "three": "3",
        "four": "4",
        "five": "5",
        "six": "6",
        "seven": "7",
        "eight": "8",
        "nine": "9",
        "ten": "10",
    }
)
ARTICLES: Final[tuple[str, ...]] = ("a", "an", "the")
# Same characters, same order, in both scripts (order matters: each one is replaced in turn).
PUNCTUATIONS: Final[tuple[str, ...]] = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

PERIOD_STRIP: Final[re.Pattern[str]] = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a look-ahead, see module docstring
COMMA_STRIP_VQA_SCRIPT: Final[re.Pattern[str]] = re.compile(r"(\d)(\,)(\d)")  # vqaEval.py
COMMA_STRIP_EVALAI: Final[re.Pattern[str]] = re.compile(r"(?<=\d)(\,)+(?=\d)")  # EvalAIAnswerProcessor
# Both scripts call `PERIOD_STRIP.sub("", text, re.UNICODE)`: the flag lands in the positional `count` parameter,
# so at most 32 periods are removed. Passed here by keyword (positional `count` is deprecated since Python 3.13).
PERIOD_STRIP_COUNT: Final[int] = int(re.UNICODE)  # == 32


def clean_whitespace(text: str) -> str:
    """The ``\\n`` / ``\\t`` -> space and ``strip()`` cleanup both scripts apply before punctuation processing."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str, comma_strip: re.Pattern[str] = COMMA_STRIP_EVALAI) -> str:
    """``processPunctuation`` / ``process_punctuation``; pass the comma regex of the script being reproduced."""
    out = text
    # Both conditions are evaluated on the ORIGINAL text for every punctuation mark (quirk kept).
    has_digit_comma = comma_strip.search(text) is not None
    for p in PUNCTUATIONS:
        next_to_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if next_to_space or has_digit_comma else " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """``processDigitArticle`` / ``process_digit_article``: lowercase, number words -> digits, drop articles,
    expand contractions, re-join on single spaces."""
    words = []
    for word in text.lower().split():
        word = NUMBER_MAP.get(word, word)  # the originals use dict.setdefault, which only adds word -> word entries
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def evalai_word_tokenize(text: str) -> str:
    """``EvalAIAnswerProcessor.word_tokenize``: lowercase, delete ``,`` and ``?``, ``'s`` -> `` 's``, strip."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def evalai_normalize(answer: str) -> str:
    """``EvalAIAnswerProcessor.__call__``: word_tokenize, whitespace cleanup, punctuation, digits/articles.

    Because word_tokenize already removed every comma, the EvalAI comma regex can never match here; it matters only
    when `process_punctuation` is called on its own (as lmms-eval's VQAv2 task does)."""
    text = clean_whitespace(evalai_word_tokenize(answer))
    return process_digit_article(process_punctuation(text, COMMA_STRIP_EVALAI))


def vqa_script_normalize(answer: str) -> str:
    """vqaEval.py's ``processPunctuation`` then ``processDigitArticle`` (no whitespace cleanup, no tokenize)."""
    return process_digit_article(process_punctuation(answer, COMMA_STRIP_VQA_SCRIPT))
