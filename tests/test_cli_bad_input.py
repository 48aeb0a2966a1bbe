"""The CLI summarizes checkpoints full of hard values and dtypes with no traceback."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tbweights.cli import main

torch = pytest.importorskip("torch")


def hard_state_dict() -> dict[str, object]:
    nan, inf = math.nan, math.inf
    return {
        "mixed": torch.tensor([1.0, nan, inf, -inf]),
        "all_nan": torch.full((3,), nan),
        "empty": torch.zeros(0, 10),
        "scalar": torch.tensor(2.0),
        "huge64": torch.tensor([1.7e308, -1.7e308], dtype=torch.float64),
        "tiny64": torch.tensor([5e-324, 0.0], dtype=torch.float64),
        "bf16": torch.tensor([3e38, -1.0], dtype=torch.bfloat16),
        "f8": torch.tensor([448.0, nan]).to(torch.float8_e4m3fn),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "flag": torch.tensor([True, False]),
        "cplx": torch.tensor([3 + 4j]),
        "sparse": torch.tensor([[0.0, 1.0]]).to_sparse(),
        "weird name|`x`\n": torch.ones(2),
    }


@pytest.mark.parametrize("command", ["show", "convert"])
def test_hard_checkpoint_no_traceback(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hard.pt"
    torch.save(hard_state_dict(), path)
    args = [command, str(path)] + (["--logdir", str(tmp_path / "run")] if command == "convert" else [])
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "skipped" not in captured.err
    if command == "show":
        assert "cplx" in captured.out and "3+4j" in captured.out
        assert "huge64" in captured.out and "1.7e+308" in captured.out
    else:
        assert "step 0: 13 tensors" in captured.out


def test_unexpected_error_no_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    """A bug of ours still ends in one error line; --debug shows the traceback."""
    import tbweights.cli as cli

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "describe", broken)
    assert main(["show", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "error: unexpected ZeroDivisionError: division by zero; rerun with --debug for the traceback and report it\n"
    )
    with pytest.raises(ZeroDivisionError):
        main(["show", str(tmp_path / "x.pt"), "--debug"])


def test_torch_checkpoint_without_torch(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "train.pt"
    torch.save({"w": torch.ones(2)}, path)
    hide_torch = "import sys; sys.modules['torch'] = None; from tbweights.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", hide_torch, "show", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "pip install 'tbweights[torch]'" in result.stderr
    assert "unexpected" not in result.stderr
