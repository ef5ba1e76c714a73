"""The README's examples run as they are written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    """The first ```python block of the README's section `heading`."""
    text = README.read_text()
    section = text[text.index(f"## {heading}\n") :]
    section = section[: section.find("\n## ", 3)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_bring_your_own_data_runs(tmp_path):
    script = tmp_path / "byo.py"
    script.write_text(python_block("Bring your own data"))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"top-1 \d+% on 10 clips\n", result.stdout), result.stdout
    assert (tmp_path / "hands" / "run" / "metrics.json").is_file()
    # another process, which never saw the layout made in the script: the checkpoint keeps it
    checkpoint = torch.load(tmp_path / "hands" / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["layout_definition"]["joints"] == ["wrist", "thumb", "index", "middle", "ring"]
    evaluated = subprocess.run(
        [sys.executable, "-m", "skelang", "eval", str(tmp_path / "hands" / "run"), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["samples"] == 10
