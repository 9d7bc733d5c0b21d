"""The embedded default end to end in its quick form (slow: about 2 minutes; `make test-all` runs it)."""

from __future__ import annotations

import json

import pytest

from stages import demo


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_writes_its_table(tmp_path):
    results = demo.main(["--quick", "--out", str(tmp_path)])
    assert [row["stage"][0] for row in results["stages"]] == ["1", "2", "3", "4"]
    for row in results["stages"]:
        for qtype in demo.READ:
            assert 0.0 <= row[f"{qtype}/windows"] <= 1.0 and row[f"{qtype}/questions"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["preset"] == "tiny"
    assert "thumbnail only" in (tmp_path / "results.md").read_text()
    assert all((tmp_path / f"stage{n}" / "loss.png").is_file() for n in range(5))
