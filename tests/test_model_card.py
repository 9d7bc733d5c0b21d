"""Model cards: MODEL_CARD.md stays the rendering of the paper config; saved folders get a card whose usage
snippet runs."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import make_image

import infimm_hd
from infimm_hd.paper_card import paper_model_card

ROOT = Path(__file__).resolve().parents[1]


def test_model_card_md_is_the_rendered_paper_card():
    assert (ROOT / "MODEL_CARD.md").read_text() == paper_model_card(), (
        "MODEL_CARD.md is stale: regenerate it with `python -m infimm_hd.paper_card > MODEL_CARD.md`"
    )
    card = paper_model_card()
    assert card.startswith("---\nlibrary_name: infimm-hd\npipeline_tag: image-text-to-text\n")
    assert "18.00B total: vision 4.35B" in card and "cross-attention 630.8M" in card
    assert "1025 tokens per 448 px crop" in card


def test_saved_folder_card_snippet_runs(tmp_path, capsys):
    model, processor = infimm_hd.build_model("tiny")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "gated blocks before decoder layers 3, 7" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    photo = tmp_path / "photo.png"
    make_image(4, 0).save(photo)
    snippet = snippet.replace('"photo.jpg"', repr(str(photo))).replace("max_new_tokens=64", "max_new_tokens=4")
    exec(compile(snippet, "MODEL_CARD usage", "exec"), {})
    assert capsys.readouterr().out.endswith("\n"), "the snippet prints the answer"
