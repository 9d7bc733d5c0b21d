"""The import rule (`tests/helpers/import_layers.py`): checked on the package, and shown to catch what it forbids."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.helpers.import_layers import FLOORS, cycles, floor_of, import_graph, report, upward_imports

ROOT = Path(__file__).resolve().parents[1] / "infimm_hd"


def test_package_imports_run_one_way_and_close_no_circle():
    text, ok = report(ROOT)
    assert ok, "the import rule is broken (fix the import, or move the module to the floor it belongs on):\n" + text


def test_core_model_knows_nothing_above_it():
    """The issue's circle: the model class imports neither presets, nor card rendering, nor the trained-only format
    directly, and the card/format modules do not import the model."""
    graph = import_graph(ROOT)
    assert not graph["infimm_hd.modeling"] & {
        "infimm_hd.presets",
        "infimm_hd.model_card",
        "infimm_hd.trained_checkpoint",
    }
    for low in ("infimm_hd.model_card", "infimm_hd.trained_checkpoint", "infimm_hd.pretrained_io"):
        assert "infimm_hd.modeling" not in graph[low] and "infimm_hd.presets" not in graph[low]


def write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "infimm_hd"
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def test_relative_lazy_and_type_checking_imports_are_all_edges(tmp_path):
    root = write_package(
        tmp_path,
        {
            "__init__.py": "from .modeling import Model\n",
            "configuration.py": "",
            "modeling.py": """
                from typing import TYPE_CHECKING
                from .configuration import Config
                if TYPE_CHECKING:
                    from .xattn import Block
                def save(self):
                    from . import model_card
            """,
            "xattn.py": "",
            "model_card.py": "",
            "training/__init__.py": "",
            "training/loop.py": "from ..modeling import Model\nfrom . import data\nimport infimm_hd.xattn.Block\n",
            "training/data.py": "from .. import configuration\n",
        },
    )
    graph = import_graph(root)
    assert graph["infimm_hd"] == {"infimm_hd.modeling"}
    assert graph["infimm_hd.modeling"] == {"infimm_hd.configuration", "infimm_hd.xattn", "infimm_hd.model_card"}
    assert graph["infimm_hd.training.loop"] == {"infimm_hd.modeling", "infimm_hd.training.data", "infimm_hd.xattn"}
    assert graph["infimm_hd.training.data"] == {"infimm_hd.configuration"}


def test_an_upward_import_and_a_lazy_circle_are_caught(tmp_path):
    root = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "configuration.py": "def f():\n    from .presets import build_model\n",  # floor 0 -> floor 3
            "presets.py": "from .modeling import Model\n",
            "modeling.py": "def save():\n    from .trained_checkpoint import load\n",
            "trained_checkpoint.py": "def load():\n    from .modeling import Model\n",  # the old lazy circle
            "scratch.py": "",  # on no floor
            "demo.py": "def run():\n    from stages.common import run_stage\n",  # the package importing its users
            "cli.py": "from .metricz.vqa import score\n",  # a module that does not exist is not the facade
        },
    )
    graph = import_graph(root)
    breaches = upward_imports(graph)
    assert "infimm_hd.configuration (floor 0) imports infimm_hd.presets (floor 3)" in breaches
    assert "infimm_hd.trained_checkpoint (floor 1) imports infimm_hd.modeling (floor 2)" in breaches
    assert "infimm_hd.scratch: not assigned to a floor" in breaches
    assert "infimm_hd.demo imports stages.common, which is outside the package" in breaches
    assert "infimm_hd.cli imports infimm_hd.metricz.vqa, which is no module of the package" in breaches
    assert cycles(graph) == [["infimm_hd.modeling", "infimm_hd.trained_checkpoint"]]


@pytest.mark.parametrize(
    "module, floor",
    [
        ("infimm_hd", 5),
        ("infimm_hd.configuration", 0),
        ("infimm_hd.image_processing.tiling", 1),
        ("infimm_hd.modeling", 2),
        ("infimm_hd.convert_official", 3),
        ("infimm_hd.training.loop", 4),
        ("infimm_hd.serving.app", 5),
        ("infimm_hd.processing_extra", None),  # a prefix matches whole dotted names only
    ],
)
def test_floors_match_whole_names_by_longest_prefix(module, floor):
    assert floor_of(module) == floor
    assert floor_of("infimm_hd.a.b.c", {0: ("a",), 1: ("a.b",)}) == 1


def test_every_floor_is_named_in_architecture_md():
    text = (ROOT.parent / "ARCHITECTURE.md").read_text()
    for prefixes in FLOORS.values():
        for prefix in prefixes:
            if prefix:
                assert f"`{prefix}" in text, f"ARCHITECTURE.md does not place `{prefix}` on its floor"
