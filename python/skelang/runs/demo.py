"""`skelang demo`: both systems end to end, on the built-in synthetic set or on NW-UCLA.

    1. HocSLM     HGLNet trained with skeleton-language fusion (configs demo_hocslm)
    2. VST        the HocSLM encoder, frozen, tokenized into semantic action tokens (demo_vst)
    3. LVLM-VAR   SmolLM2 + LoRA reading the action narratives (demo_lm)

then a report: each step's accuracy and wall time, three test sequences with their narratives
and the glossary lines of their tokens, and three explanations. The runs go to OUT/hocslm,
OUT/vst and OUT/lm; a demo that was stopped resumes where it stopped, and finished steps are
kept. With `data` (NW-UCLA's folder or archive) the same recipe runs on NW-UCLA view 3 with
its data section (that of configs/nw_ucla_hglnet_fast.yaml) and its descriptions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from skelang.runs.config import load_config
from skelang.runs.directory import RunDirectory

STEPS = ("hocslm", "vst", "lm")


def _data_overrides(data: str | None) -> list[str]:
    if data is None:
        return []
    return [
        f"data.train={data}",
        "data.test=null",
        "data.benchmark=nw-ucla-view3",
        "data.num_frames=52",
        "data.rotate=false",
        "data.minmax=true",
        "data.sampling=index",
        "data.augmentation.rotation_degrees=[60,60,0]",
    ]


def demo_configs(out: str | os.PathLike, data: str | None = None) -> dict[str, dict]:
    """The resolved configs of the three steps, writing to `out`."""
    out = Path(out)
    shared = _data_overrides(data)
    names = ["ssf.descriptions=nw-ucla"] if data else []
    return {
        "hocslm": load_config("demo_hocslm", shared + names),
        "vst": load_config("demo_vst", shared + [f"vst.encoder_run={out / 'hocslm'}"]),
        "lm": load_config(
            "demo_lm", shared + [f"lm.vst_run={out / 'vst'}"] + (["lm.descriptions=nw-ucla"] if data else [])
        ),
    }


def run_demo(
    out: str | os.PathLike, data: str | None = None, progress: bool = True, echo: Callable[[str], None] = print
) -> dict:
    """Trains (or resumes) the three steps into `out` and returns the report (see the module's
    documentation), echoing each part as it comes."""
    from skelang.runs import train
    from skelang.runs.stages.lm import explain_run
    from skelang.runs.stages.vst import glossary
    from skelang.vst.glossary import glossary_lines

    out = Path(out)
    report: dict = {"steps": {}}
    started = time.perf_counter()
    for step, config in demo_configs(out, data).items():
        run = RunDirectory(out / step)
        echo(f"== {step}: {run.path}")
        step_started = time.perf_counter()
        metrics = train(config, run.path, resume=run.exists(), progress=progress)
        summary = {"top1": metrics["top1"], "seconds": time.perf_counter() - step_started}
        for key in ("token_top1", "encoder_top1", "codebook_perplexity"):
            if key in metrics:
                summary[key] = metrics[key]
        report["steps"][step] = summary
        echo(
            f"   top-1 {metrics['top1']:.1%}"
            + "".join(f", {key} {summary[key]:.3g}" for key in summary if key not in ("top1", "seconds"))
            + f" ({summary['seconds']:.0f} s)"
        )
    entries = glossary(out / "vst")
    records = explain_run(out / "lm", count=3)
    report["samples"] = []
    for record in records:
        lines = glossary_lines(record["narrative"], entries)
        report["samples"].append({**record, "glossary": lines})
        truth = f" (true: {record['label_name']})" if record["label_name"] is not None else ""
        echo(f"\n[{record['index']}] {record['name']}: {record['predicted_name']} p={record['probability']:.2f}{truth}")
        echo(f"  narrative:   {record['narrative']}")
        for line in lines:
            echo(f"    {line}")
        echo(f"  explanation: {record['explanation']}")
    report["seconds"] = time.perf_counter() - started
    echo(f"\ndemo finished in {report['seconds'] / 60:.1f} min; runs in {out}")
    return report
