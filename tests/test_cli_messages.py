"""CLI messages: `show --format` names its choices, and --quiet summaries point to a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tbweights.cli import main


def test_unknown_format_names_the_choices(tmp_path: Path, capsys) -> None:
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        main(["show", str(tmp_path / "m.safetensors"), "--format", "xml"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "tbweights show: error: argument --format: invalid choice: 'xml' (choose from table, json, csv)"


def test_format_in_capitals(tmp_path: Path, capsys) -> None:
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "m.safetensors"))
    assert main(["show", str(tmp_path / "m.safetensors"), "--format", "JSON"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "w"


def test_quiet_skip_summary_points_to_rerun(tmp_path: Path, capsys) -> None:
    """--quiet hides the per-tensor warnings, so the summary must not point at them."""
    pytest.importorskip("torch")
    import torch

    torch.save({"ok.weight": torch.ones(2), "meta.weight": torch.empty(2, device="meta")}, tmp_path / "m.pt")
    assert main(["show", str(tmp_path / "m.pt"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: 1 tensor(s) skipped; rerun without --quiet to see which and why"
    assert main(["convert", str(tmp_path / "m.pt"), "--logdir", str(tmp_path / "logs"), "-q"]) == 1
    assert "rerun without --quiet to see which and why" in capsys.readouterr().err
