"""Text-only arithmetic word problems in the GSM8K style, for the "cot" task of `data_prep.synthetic`.

Each template draws small numbers from a `numpy.random.Generator`, chosen so every intermediate result is a
non-negative integer, and returns the question, the reasoning steps (one sentence per line, each showing its
arithmetic like GSM8K's solutions) and the final number. 2 to 4 steps of +, - and x: enough for Masked Thought to
have a thought worth masking, small enough for a tiny model to learn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NAMES = ("Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom", "Yuki", "Ines")
ITEMS = ("apples", "stickers", "marbles", "pencils", "cookies", "stamps", "shells", "cards")


@dataclass(frozen=True)
class WordProblem:
    question: str
    steps: tuple[str, ...]  # the reasoning, one sentence each
    answer: int
    template: str


def _n(rng: np.random.Generator, low: int, high: int) -> int:
    """A uniform integer in [low, high]."""
    return int(rng.integers(low, high + 1))


def _packs(rng: np.random.Generator) -> WordProblem:
    name, item = NAMES[_n(rng, 0, len(NAMES) - 1)], ITEMS[_n(rng, 0, len(ITEMS) - 1)]
    packs, per, have = _n(rng, 2, 9), _n(rng, 2, 12), _n(rng, 0, 20)
    bought = packs * per
    total = have + bought
    given = _n(rng, 1, total)
    question = (
        f"{name} has {have} {item}. {name} buys {packs} packs with {per} {item} in each pack, then gives {given} "
        f"{item} to a friend. How many {item} does {name} have now?"
    )
    steps = (
        f"{name} buys {packs} x {per} = {bought} {item}.",
        f"{name} then has {have} + {bought} = {total} {item}.",
        f"After giving {given} away, {name} has {total} - {given} = {total - given} {item}.",
    )
    return WordProblem(question, steps, total - given, "packs")


def _savings(rng: np.random.Generator) -> WordProblem:
    name = NAMES[_n(rng, 0, len(NAMES) - 1)]
    weekly, weeks = _n(rng, 2, 15), _n(rng, 2, 8)
    saved = weekly * weeks
    spent = _n(rng, 1, saved)
    question = (
        f"{name} saves {weekly} dollars every week for {weeks} weeks and then spends {spent} dollars on a book. "
        f"How many dollars does {name} have left?"
    )
    steps = (f"{name} saves {weekly} x {weeks} = {saved} dollars.", f"{saved} - {spent} = {saved - spent}.")
    return WordProblem(question, steps, saved - spent, "savings")


def _reading(rng: np.random.Generator) -> WordProblem:
    name = NAMES[_n(rng, 0, len(NAMES) - 1)]
    monday, more = _n(rng, 3, 30), _n(rng, 1, 15)
    tuesday = monday + more
    question = (
        f"{name} reads {monday} pages on Monday and {more} more pages on Tuesday than on Monday. "
        f"How many pages does {name} read on the two days together?"
    )
    steps = (
        f"On Tuesday {name} reads {monday} + {more} = {tuesday} pages.",
        f"Together that is {monday} + {tuesday} = {monday + tuesday} pages.",
    )
    return WordProblem(question, steps, monday + tuesday, "reading")


def _bakery(rng: np.random.Generator) -> WordProblem:
    trays, per, extra = _n(rng, 2, 6), _n(rng, 3, 12), _n(rng, 1, 10)
    baked = trays * per
    total = baked + extra
    sold = _n(rng, 1, total)
    question = (
        f"A baker makes {trays} trays of {per} muffins and then {extra} more muffins. {sold} muffins are sold. "
        "How many muffins are left?"
    )
    steps = (
        f"The trays hold {trays} x {per} = {baked} muffins.",
        f"With the extra ones there are {baked} + {extra} = {total} muffins.",
        f"After selling {sold}, {total} - {sold} = {total - sold} muffins are left.",
    )
    return WordProblem(question, steps, total - sold, "bakery")


def _marbles(rng: np.random.Generator) -> WordProblem:
    name = NAMES[_n(rng, 0, len(NAMES) - 1)]
    red, blue, bags, per = _n(rng, 1, 15), _n(rng, 1, 15), _n(rng, 2, 5), _n(rng, 2, 8)
    first, bought = red + blue, bags * per
    total = first + bought
    lost = _n(rng, 1, total)
    question = (
        f"{name} has {red} red marbles and {blue} blue marbles, buys {bags} bags of {per} green marbles and then "
        f"loses {lost} marbles. How many marbles does {name} have now?"
    )
    steps = (
        f"{name} starts with {red} + {blue} = {first} marbles.",
        f"The bags hold {bags} x {per} = {bought} marbles.",
        f"That makes {first} + {bought} = {total} marbles.",
        f"After losing {lost}, {name} has {total} - {lost} = {total - lost} marbles.",
    )
    return WordProblem(question, steps, total - lost, "marbles")


def _bus(rng: np.random.Generator) -> WordProblem:
    start = _n(rng, 5, 40)
    off1 = _n(rng, 0, start)
    on1 = _n(rng, 0, 20)
    after1 = start - off1 + on1
    off2 = _n(rng, 0, after1)
    question = (
        f"A bus leaves with {start} passengers. At the first stop {off1} get off and {on1} get on. At the second "
        f"stop {off2} get off. How many passengers are on the bus now?"
    )
    steps = (
        f"After {off1} get off there are {start} - {off1} = {start - off1} passengers.",
        f"After {on1} get on there are {start - off1} + {on1} = {after1} passengers.",
        f"At the second stop {after1} - {off2} = {after1 - off2} passengers remain.",
    )
    return WordProblem(question, steps, after1 - off2, "bus")


TEMPLATES: tuple[Callable[[np.random.Generator], WordProblem], ...] = (
    _packs,
    _savings,
    _reading,
    _bakery,
    _marbles,
    _bus,
)


def word_problem(rng: np.random.Generator) -> WordProblem:
    """A random problem from a random template."""
    return TEMPLATES[int(rng.integers(len(TEMPLATES)))](rng)
