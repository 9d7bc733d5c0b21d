"""The `infimm-hd` command line: help on every subcommand, the plan command's JSON, errors as exit codes."""

from __future__ import annotations

import json

import pytest

from infimm_hd.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["no-such-command"]) == 2


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_plan_reports_grid_and_keys(capsys):
    assert main(["plan", "1344", "896"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["cols"], report["num_windows"]) == (2, 3, 6)
    assert report["cross_attention_keys"] == 7 * 1025
    assert main(["plan", "0", "10"]) == 2
    assert "zero size" in capsys.readouterr().err
