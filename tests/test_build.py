"""The extension's build facts, the torch-version guard, and the test-data policy."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

import skelang


def test_extension_registers_the_skelang_library():
    ops = skelang._C.registered_ops()
    assert "graph_aggregate" in ops and "CPU" in ops["graph_aggregate"]
    assert "graph_aggregate_grad_topology" in ops
    assert hasattr(torch.ops.skelang, "graph_aggregate")
    # an op composed of ATen calls has no device kernel of its own, and runs everywhere
    assert ops["multiscale_temporal_conv"] == ["composite of ATen ops (every device)"]


def test_extension_was_built_against_the_running_torch():
    from skelang import _build_config

    assert skelang._C.torch_version() == torch.__version__ == _build_config.TORCH_VERSION
    assert skelang._C.with_cuda() == _build_config.WITH_CUDA


def test_torch_mismatch_names_both_versions():
    with pytest.raises(ImportError, match=r"built against torch 2\.0\.0, but torch 2\.13\.0\+cpu is installed"):
        skelang._check_torch_version("2.0.0", "2.13.0+cpu")
    skelang._check_torch_version("2.13.0", "2.13.0")


def test_import_fails_cleanly_with_another_torch(tmp_path):
    # A fresh interpreter whose torch reports another version must refuse to load _C.
    code = (
        "import torch; torch.__version__ = '9.9.9'\ntry:\n    import skelang\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "built against torch" in out and "9.9.9 is installed" in out


@pytest.mark.parametrize("required,outcome", [("0", "skipped"), ("1", "failed")])
def test_missing_shared_data_skips_or_fails(tmp_path, required, outcome):
    test_file = tmp_path / "test_needs_data.py"
    test_file.write_text(
        "from conftest import require_shared_data\ndef test_it():\n    require_shared_data('no/such/file.json')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "SKELANG_REQUIRE_SHARED_DATA": required, "PYTHONPATH": str(REPO_ROOT / "tests")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert f"1 {outcome}" in result.stdout, result.stdout
