"""`skelang export`: a trained run's model for inference, as TorchScript, a torch.export program
or ONNX, checked against the eager model before it is written.

    encoder, ssf runs   input (N, C, T, V, M) -> logits (N, classes)
    vst runs            input (N, C, T, V, M) -> (logits (N, classes), distances (N, S, K) of each
                        segment to every code); the narrative is each sample's codes smoothed
                        with the run's switch penalty (skelang.vst.narrative.smooth_tokens; the
                        nearest code when the penalty is 0)

The input is what the run's evaluation preprocessing makes of a sequence (skelang.data.
Preprocess of its data section; C = 3 x the number of streams, T = data.num_frames). The batch
size is free in every format.

    torchscript  traced with skelang's fused operators: load it after `import skelang`
                 (torch.jit.load)
    exported     a torch.export program (.pt2) of the pure-PyTorch reference path (model.backend:
                 reference, the same weights): torch.export.load needs torch alone
    onnx         the reference path through torch.onnx's dynamo exporter (the onnx and
                 onnxscript packages; onnxruntime checks it): pip install 'skelang[export]'

skelang's C++ operators are not in the exported and ONNX files: ONNX has no such operators,
and torch.export specialises the batch size inside them (their C++ reads sizes as integers).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from skelang.files import atomic_open
from skelang.runs.directory import open_run

FORMATS = ("torchscript", "exported", "onnx")


class TokenizerForExport(nn.Module):
    """A VST model's inference path: (logits, distances of each segment to every code)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.encoder.features(x)
        logits = self.model.encoder.classify(features)  # eval mode: no dropout
        z = self.model.segment_features(features)  # (N, S, D)
        return logits, self.model.quantizer.distances(z)


def inference_module(run_dir: str | os.PathLike, backend: str | None = None) -> tuple[nn.Module, torch.Tensor]:
    """(the run's model for inference in eval mode on the CPU, an example input of batch 2);
    `backend` ("cpp" or "reference") rebuilds the model on that path with the same weights."""
    from skelang.data.layouts import get_layout
    from skelang.runs.stages import STAGES, EncoderStage

    run = open_run(run_dir)
    stage_class = STAGES[run.stage]
    if not issubclass(stage_class, EncoderStage):
        raise ValueError(
            f"{run.path}: a {run.stage} run is not exported: its LoRA adapter is {run.file('adapter')} "
            f"(PEFT's format), its narratives come from its VST run"
        )
    stage = stage_class.load(run, "cpu")
    model = stage.model
    if backend is not None and backend != stage.config["model"]["backend"]:
        stage.config["model"]["backend"] = backend
        rebuilt = stage.build_model(stage.shape, for_training=False)
        rebuilt.load_state_dict(model.state_dict())
        model = rebuilt
    model = model.eval()
    if run.stage == "vst":
        model = TokenizerForExport(model).eval()
    shape = stage.shape
    joints = len(get_layout(shape["layout"]).joint_names)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(
        2, shape["in_channels"], stage.config["data"]["num_frames"], joints, shape["num_bodies"], generator=generator
    )
    return model, example


def _outputs(value) -> list[torch.Tensor]:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def export_run(run_dir: str | os.PathLike, format: str, out: str | os.PathLike, force: bool = False) -> dict:
    """Writes the run's inference model in `format` (FORMATS) to `out` and returns a report:
    the format, the file, the input shape, and the largest difference between the exported
    model's outputs and the eager model's on a batch other than the one traced. The file is
    written whole, only after that check passes; an existing `out` is replaced only with
    `force`, and never a file of the run itself."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    out, run = Path(out), open_run(run_dir)
    if out.resolve().parent == run.path.resolve() or run.path.resolve() in out.resolve().parents:
        if out.exists():
            raise ValueError(f"--out {out}: a file of the run {run.path}; choose a path outside it")
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists: choose another path or pass --force to replace it")
    model, example = inference_module(run_dir)
    check = torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _outputs(model(check))  # the run's own model, as skelang eval runs it
    if format != "torchscript":
        model = inference_module(run_dir, backend="reference")[0]
    if format == "torchscript":
        data, got = _torchscript(model, example, check)
    elif format == "exported":
        data, got = _exported(model, example, check)
    else:
        data, got = _onnx(model, example, check)
    difference = max(float((a - b).abs().max()) for a, b in zip(got, expected))
    scale = max(float(b.abs().max()) for b in expected)
    if not difference <= 1e-4 * max(1.0, scale):
        raise ValueError(f"the {format} model differs from the eager model by {difference:.3g}: not written")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as file:
        file.write(data)
    return {
        "format": format,
        "file": str(out),
        "input_shape": ["N", *example.shape[1:]],
        "outputs": len(expected),
        "max_abs_difference": difference,
        "stage": run.stage,
    }


def _torchscript(model: nn.Module, example: torch.Tensor, check: torch.Tensor) -> tuple[bytes, list]:
    with torch.no_grad(), warnings.catch_warnings():
        # the frame count (and so VST's segment count) is fixed by data.num_frames; the batch is free
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    with torch.no_grad():
        return buffer.getvalue(), _outputs(loaded(check))


def _exported(model: nn.Module, example: torch.Tensor, check: torch.Tensor) -> tuple[bytes, list]:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    loaded = torch.export.load(io.BytesIO(buffer.getvalue()))
    with torch.no_grad():
        return buffer.getvalue(), _outputs(loaded.module()(check))


def _onnx(model: nn.Module, example: torch.Tensor, check: torch.Tensor) -> tuple[bytes, list]:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(
            "--format onnx needs the onnx, onnxscript and onnxruntime packages: pip install 'skelang[export]'"
        ) from None
    batch = torch.export.Dim("batch", min=1)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on optional packages (torchvision) are not ours
    try:
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside the exporter
            path = Path(folder) / "model.onnx"
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
            )
            data = path.read_bytes()
    except ImportError as error:
        raise ValueError(f"--format onnx: {error}; pip install 'skelang[export]'") from None
    finally:
        exporter_log.setLevel(level)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return data, [torch.from_numpy(value) for value in session.run(None, {name: check.numpy()})]
