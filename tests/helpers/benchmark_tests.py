"""Helpers the benchmark-loader tests share: lmms-eval's task settings as the reference, and in-place JSON edits.

lmms-eval is a test dependency (the Makefile installs it), so it is imported, never skipped: a test whose reference
cannot be read must fail, not vanish.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmms_eval
import yaml


def lmms_kwargs(task: str, yaml_name: str) -> dict:
    """`lmms_eval_specific_kwargs.default` of a task YAML (following `include:`), `!function` tags ignored."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    folder = Path(lmms_eval.__file__).parent / "tasks" / task
    config = yaml.load((folder / yaml_name).read_text(), Loader)
    while "lmms_eval_specific_kwargs" not in config:
        config = yaml.load((folder / config["include"]).read_text(), Loader)
    return config["lmms_eval_specific_kwargs"]["default"]


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite the JSON file `path` after `edit` changed its parsed content in place (to build bad layouts)."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
