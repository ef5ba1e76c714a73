"""skelang: skeleton-based action recognition enhanced by language models.

The compute lives in the C++ extension ``skelang._C``, whose operators are registered
with the PyTorch dispatcher as ``torch.ops.skelang.*``; ``skelang.ops`` wraps them and
``skelang.reference`` holds their pure-PyTorch twins.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _check_torch_version(built_with: str, running: str) -> None:
    """Refuse to load a _C compiled against another torch: its C++ ABI would not match."""
    if built_with != running:
        raise ImportError(
            f"skelang's C++ extension was built against torch {built_with}, but torch "
            f"{running} is installed. Rebuild skelang for this torch: `make install`, or "
            f"`pip install --no-build-isolation --force-reinstall --no-deps .` in the source tree."
        )


def _load_extension():
    import os

    from skelang.threads import choose_wait_policy

    # OpenMP threads that spin while another process holds their core stall every parallel
    # region; waiting passively beside other jobs costs little, alone it slows a training step
    # (skelang.threads). Only effective when torch has not loaded OpenMP yet.
    choose_wait_policy(os.environ)
    import torch

    try:
        from skelang import _build_config
    except ImportError as error:
        raise ImportError(
            "skelang's C++ extension is not built. Run `make install` (or "
            "`pip install --no-build-isolation -e .`) in the source tree."
        ) from error
    _check_torch_version(_build_config.TORCH_VERSION, torch.__version__)
    from skelang import _C

    return _C


_C = _load_extension()

from skelang import ops, reference

__all__ = ["ops", "reference", "__version__"]


def __getattr__(name: str):
    """skelang.ablate (an ablation sweep, see skelang.runs.ablate), loaded when first used."""
    if name == "ablate":
        from skelang.runs.ablate import ablate

        return ablate
    raise AttributeError(f"module 'skelang' has no attribute {name!r}")
