"""The `skelang` command line.

skelang info [--json]     package and torch versions, CUDA build, registered operators
skelang bench [--json]    the benchmarks of benchmarks/ (a source checkout), with ratios
skelang data inspect PATH [--json]        what a dataset holds, and its bad files
skelang data convert PATH --out DIR       a dataset into a fast-loading cache
skelang data render PATH --out FILE.gif   an animation of one sequence
skelang train --config FILE|NAME [key=value ...] --out DIR [--resume | --streams all]   train a model
skelang config show|keys|list     a resolved config, every key with its default, the shipped configs
skelang ensemble RUN... [--weights W... | --search VAL...]   fuse runs' per-sample scores by sample id
skelang ablate SWEEP --out DIR [--jobs N]   an ablation sweep: results.csv, results.md, results.png
skelang data extract VIDEO|FOLDER --out DIR   skeletons from videos (BlazePose), resumable
skelang predict RUN VIDEO [--window N] [--render OUT.mp4]   the action in a video, explained for LM runs
skelang demo [--data NW_UCLA] [--out DIR]     both systems end to end: HocSLM, VST tokens, LM explanations
skelang plot RUN... --out FILE.png [--x epoch|minutes]   training curves of runs on one figure
skelang compare RUN... [--target T] [--json]   runs side by side: last, best, time to a target top-1
skelang export RUN --format torchscript|exported|onnx --out FILE   a run's model for inference
skelang eval RUN_DIR [--json] [--data PATH] [--zero-shot | --explanations]   a run's test metrics
skelang explain RUN_DIR [--data PATH] [--sample ID] [--json]       the language model's answers, explained
skelang model profile [--type T | --config FILE] [--step N] [--precision bf16] [--json]   a model's cost
skelang vst tokenize RUN_DIR --data PATH [--out FILE.jsonl]   each sequence's narrative
skelang vst glossary RUN_DIR [--json]                         the codes described in words
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import sys
from pathlib import Path

from skelang.threads import ThreadBudget

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # python/skelang/cli.py -> repository root


CPU_LEVELS = {4: "x86-64-v4 (AVX-512)", 3: "x86-64-v3 (AVX2)", 0: "baseline"}  # skelang._C.cpu_level()


def build_info() -> dict:
    import torch

    import skelang
    from skelang.runs.stages.base import native_bfloat16

    return {
        "skelang": skelang.__version__,
        "torch": torch.__version__,
        "built_against_torch": skelang._C.torch_version(),
        "cuda_kernels_built": skelang._C.with_cuda(),
        "cuda_available": torch.cuda.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kernels": CPU_LEVELS[skelang._C.cpu_level()],
        "cpu_native_bfloat16": native_bfloat16(torch.device("cpu")),
        "ops": skelang._C.registered_ops(),
    }


def cmd_info(args) -> int:
    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"skelang {info['skelang']} (torch {info['torch']}, built against {info['built_against_torch']})")
    print(
        f"CUDA kernels: {'built' if info['cuda_kernels_built'] else 'not built (CPU-only build)'}; "
        f"CUDA device available: {'yes' if info['cuda_available'] else 'no'}"
    )
    native = {True: "yes", False: "no (train.precision=bf16 is emulated, slower than fp32)", None: "unknown"}
    print(
        f"CPU: {info['cpu_capability']} (torch), {info['cpu_kernels']} (skelang's kernels); "
        f"native bfloat16: {native[info['cpu_native_bfloat16']]}"
    )
    print("operators:")
    for name, devices in info["ops"].items():
        print(f"  skelang::{name:<32} {', '.join(devices)}")
    return 0


def _clip_options(args) -> dict:
    """The options of the clips format (skelang.data.formats.read_clip_arrays)."""
    return {"layout": args.layout, "dims": args.dims, "labels": args.labels, "coordinates": args.coordinates}


def cmd_data_inspect(args) -> int:
    from skelang.data.inspect import format_report, inspect_dataset

    report = inspect_dataset(
        args.path, args.format, args.workers, args.benchmark, progress=not args.json, clips=_clip_options(args)
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_data_convert(args) -> int:
    from skelang.data.inspect import convert_dataset

    if (args.benchmark is None) != (args.part is None):
        raise SystemExit("skelang data convert: --benchmark and --part go together")
    result = convert_dataset(
        args.path,
        args.out,
        args.format,
        args.workers,
        args.benchmark,
        args.part,
        force=args.force,
        clips=_clip_options(args),
        skip_invalid=args.skip_invalid,
    )
    for error in result["invalid"]:
        print(f"skipped: {error}", file=sys.stderr)
    notes = [f"{len(result['skipped'])} without a skeleton skipped"] if result["skipped"] else []
    if result["invalid"]:
        notes.append(f"{len(result['invalid'])} invalid skipped (listed above)")
    if result["outside_benchmark"]:
        notes.append(f"{len(result['outside_benchmark'])} outside {args.benchmark} left out")
    print(f"wrote {result['sequences']} sequences to {result['cache']}" + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


def cmd_data_render(args) -> int:
    from skelang.data.readers import open_sequences
    from skelang.data.render import render_sequence

    if args.code is not None:
        from skelang.runs.stages.vst import code_motion

        out = render_sequence(
            code_motion(args.path, args.code), args.out, fps=args.fps, title=f"<a{args.code}> decoded"
        )
        print(f"wrote {out}")
        return 0
    sequences = open_sequences(args.path, format=args.format)
    if not -len(sequences) <= args.index < len(sequences):
        raise ValueError(f"--index {args.index}, but {args.path} holds {len(sequences)} sequences")
    out = render_sequence(sequences[args.index], args.out, fps=args.fps)
    print(f"wrote {out}")
    return 0


def _add_data_commands(commands) -> None:
    from skelang.data.readers import FORMATS
    from skelang.data.splits import split_names

    data = commands.add_parser("data", help="inspect, convert and render skeleton datasets")
    actions = data.add_subparsers(dest="data_command", required=True)
    path_help = (
        "a dataset: a file, a folder, an archive, a skelang cache, or 'synthetic[:N[:SEED]]' "
        "(the built-in set, N per class)"
    )

    def common(parser):
        parser.add_argument("path", help=path_help)
        parser.add_argument(
            "--format", default="auto", choices=("auto",) + FORMATS, help="the format (default: detected from the path)"
        )
        parser.add_argument("--workers", type=int, default=1, help="processes that parse files")
        clips = parser.add_argument_group("your own clips (an .npz of one array per clip, or a folder of .npy)")
        clips.add_argument("--layout", help="their skeleton layout (default: from the joint count)")
        clips.add_argument("--dims", default="TVC", help="each clip's dimension order, e.g. TVC or MTVC")
        clips.add_argument("--labels", help="a CSV file of name,label lines (labels: class names or indices)")
        clips.add_argument("--coordinates", choices=("xyz", "xy", "xy+score"), help="default: xy for 2, xyz for 3")

    inspect = actions.add_parser("inspect", help="counts per class, frames, bodies, bad files")
    common(inspect)
    inspect.add_argument("--benchmark", choices=split_names(), help="also count the train/test split")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.set_defaults(func=lambda args, rest: cmd_data_inspect(args))

    convert = actions.add_parser("convert", help="convert a dataset into a cache folder")
    common(convert)
    convert.add_argument("--out", required=True, help="the cache folder to write")
    convert.add_argument("--benchmark", choices=split_names(), help="keep one part of this split (with --part)")
    convert.add_argument("--part", choices=("train", "test"), help="the part to keep (with --benchmark)")
    convert.add_argument("--force", action="store_true", help="replace a skelang cache at --out (nothing else is)")
    convert.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out bad files or entries (each named on stderr, counted) instead of stopping at the first",
    )
    convert.set_defaults(func=lambda args, rest: cmd_data_convert(args))

    render = actions.add_parser("render", help="an animated GIF or MP4 of one sequence")
    render.add_argument("path", help=path_help + "; with --code, a training run with VST")
    render.add_argument("--format", default="auto", choices=("auto",) + FORMATS)
    render.add_argument("--index", type=int, default=0, help="which sequence (default: the first)")
    render.add_argument("--out", required=True, help="output .gif or .mp4")
    render.add_argument("--fps", type=float, default=15.0)
    render.add_argument("--code", type=int, help="render the decoded motion of this VST code of the run at PATH")
    render.set_defaults(func=lambda args, rest: cmd_data_render(args))

    extract = actions.add_parser("extract", help="skeletons from a video or a folder of videos (BlazePose)")
    extract.add_argument("path", help="a video, or a folder of videos (class folders give the labels)")
    extract.add_argument("--out", required=True, help="the cache folder (or PYSKL .pkl with --format pyskl)")
    extract.add_argument("--labels", help="a CSV file of name,label lines (name: the video's file stem)")
    extract.add_argument(
        "--layout",
        default="blazepose33",
        choices=("blazepose33", "ntu25", "kinect_v1_20"),
        help="the skeleton layout written (default blazepose33; ntu25 and kinect_v1_20 are derived)",
    )
    extract.add_argument(
        "--coordinates",
        default="camera",
        choices=("camera", "world", "image"),
        help="camera: metres in camera space (default); world: each body hip-centred; image: pixels",
    )
    extract.add_argument("--max-people", type=int, default=2, help="bodies tracked per video (default 2)")
    extract.add_argument("--pose-model", default="full", choices=("full", "lite"), help="BlazePose landmark model")
    extract.add_argument("--format", default="cache", choices=("cache", "pyskl"), help="a skelang cache or PYSKL")
    extract.add_argument("--work", help="where each video's landmarks are kept (default OUT.poses): resumable")
    extract.add_argument("--force", action="store_true", help="replace a skelang cache (or the .pkl) at --out")
    extract.add_argument("--json", action="store_true", help="print machine-readable JSON")
    extract.set_defaults(func=lambda args, rest: cmd_data_extract(args))


def cmd_data_extract(args) -> int:
    from skelang.video.dataset import extract_dataset

    result = extract_dataset(
        args.path,
        args.out,
        labels=args.labels,
        layout=args.layout,
        coordinates=args.coordinates,
        max_people=args.max_people,
        landmark_model=args.pose_model,
        format=args.format,
        work=args.work,
        force=args.force,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    speed = f", {result['frames_per_second']:.1f} frames/s" if result["frames_per_second"] else ""
    print(
        f"wrote {result['sequences']} of {result['videos']} videos to {result['out']} "
        f"({result['frames']} frames{speed}; landmarks kept in {result['work']})"
    )
    return 0


def cmd_predict(args) -> int:
    from skelang.runs.predict import predict_video

    report = predict_video(
        args.run_dir,
        args.video,
        window=args.window,
        stride=args.stride,
        max_people=args.max_people,
        landmark_model=args.pose_model,
        render=args.render,
        progress=not args.json,
        coordinates=args.coordinates,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    people = ", ".join(f"{count} frames with {n}" for n, count in enumerate(report["people_per_frame"]) if count)
    print(f"{report['video']}: {report['frames']} frames ({people}; {report['extraction_fps']:.1f} frames/s)")
    for window in report["windows"]:
        top = window["top5"]
        print(
            f"frames {window['start']}-{window['end']}: {top[0]['name']} ({top[0]['probability']:.0%}); then "
            + ", ".join(f"{t['name']} ({t['probability']:.0%})" for t in top[1:])
        )
        if "narrative" in window:
            print(f"  narrative: {window['narrative']}")
            for line in window["glossary"]:
                print(f"    {line}")
        if "explanation" in window:
            print(f"  explanation: {window['explanation']}")
    if "render" in report:
        print(f"wrote {report['render']}")
    return 0


def _add_predict_command(commands) -> None:
    parser = commands.add_parser(
        "predict",
        help="the action in a video, by a trained run (with its narrative and "
        "explanation for VST and language-model runs)",
    )
    parser.add_argument("run_dir", help="a run folder of any stage")
    parser.add_argument("video", help="a video file")
    parser.add_argument("--window", type=int, help="frames per window (default: the whole video)")
    parser.add_argument("--stride", type=int, help="frames between windows (default: half a window)")
    parser.add_argument("--max-people", type=int, help="bodies tracked (default: the run's)")
    parser.add_argument("--pose-model", default="full", choices=("full", "lite"), help="BlazePose landmark model")
    parser.add_argument(
        "--coordinates",
        default="camera",
        choices=("camera", "world", "image"),
        help="the skeletons' coordinates, as the run's training data (default camera)",
    )
    parser.add_argument("--render", help="write the video with skeletons and labels here (.mp4)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=lambda args, rest: cmd_predict(args))


def cmd_train(args) -> int:
    from skelang.runs import load_config, train, train_streams
    from skelang.runs.ablate import end_with_the_sweep
    from skelang.runs.distributed import is_main_process

    end_with_the_sweep()
    if args.streams is not None and args.config is None:
        raise ValueError("--streams: give --config (each stream's run in OUT/<stream> resumes by itself)")
    if args.streams is not None and any(
        override.split("=", 1)[0].strip() == "data.streams" for override in args.overrides
    ):
        raise ValueError("--streams trains one run per stream, each with its own data.streams: drop data.streams=")
    if args.config is None:
        if not args.resume:
            raise ValueError("--config: expected a configuration (only --resume reads the run's own config.yaml)")
        args.config = str(Path(args.out) / "config.yaml")
        if not Path(args.config).is_file():
            raise ValueError(f"--resume: {args.out} holds no run (no config.yaml); give --config")
    config = load_config(args.config, args.overrides)
    quiet = not is_main_process()  # under torchrun, rank 0 reports
    if args.streams is not None:
        from skelang.data.preprocess import STREAMS
        from skelang.runs.ensemble import format_report

        streams = list(STREAMS) if args.streams == "all" else [s.strip() for s in args.streams.split(",") if s.strip()]
        report = train_streams(config, streams, args.out, progress=not args.no_progress)
        if not quiet:
            print(format_report(report))
        return 0
    metrics = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    if not quiet:
        print(
            f"top-1 {metrics['top1']:.2%}, top-5 {metrics['top5']:.2%} after {metrics['epochs']} "
            f"epoch{'s' if metrics['epochs'] != 1 else ''} "
            f"({metrics['wall_time_s']:.0f} s, {metrics['parameters']:,} parameters); wrote {args.out}"
        )
    return 0


def cmd_eval(args) -> int:
    from skelang.runs import evaluate_run, open_run

    if open_run(args.run_dir).stage == "lm":
        return cmd_eval_language(args)
    if args.explanations:
        raise ValueError(f"{args.run_dir}: --explanations needs a language-model run (stage lm)")
    unseen = [int(c) for c in args.unseen.split(",")] if args.unseen else None
    metrics = evaluate_run(
        args.run_dir,
        args.data,
        zero_shot=args.zero_shot or unseen is not None,
        unseen=unseen,
        calibration=args.calibration,
        scores_path=args.scores,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    if args.zero_shot or unseen is not None:
        if "gzsl_seen_top1" not in metrics:
            raise ValueError(f"{args.run_dir}: no zero-shot metrics: train stage ssf with ssf.unseen, or pass --unseen")

        def percent(value):
            return "-" if value is None else f"{value:.2%}"

        print(
            f"{args.run_dir}: zero-shot on classes {metrics['unseen_classes']} (calibration {args.calibration}): "
            f"ZSL unseen top-1 {percent(metrics['zsl_unseen_top1'])} "
            f"(ConSE {percent(metrics['zsl_conse_unseen_top1'])}); "
            f"GZSL seen {percent(metrics['gzsl_seen_top1'])}, unseen {percent(metrics['gzsl_unseen_top1'])}, "
            f"harmonic mean {percent(metrics['gzsl_harmonic_mean'])}"
        )
        return 0
    print(
        f"{args.run_dir} (epoch {metrics['epoch']}) on {args.data or 'its test data'}: "
        f"top-1 {metrics['top1']:.2%}, top-5 {metrics['top5']:.2%} over {metrics['samples']} samples"
        + (f"; per-sample scores in {metrics['scores']}" if "scores" in metrics else "")
    )
    names = metrics.get("class_names") or []
    for label, accuracy in enumerate(metrics["per_class_accuracy"]):
        name = f" {names[label]}" if label < len(names) else ""
        print(f"  class {label:>3}{name}: " + ("no samples" if accuracy is None else f"{accuracy:.2%}"))
    return 0


def cmd_eval_language(args) -> int:
    from skelang.runs.stages.lm import evaluate_language_run

    metrics = evaluate_language_run(
        args.run_dir,
        args.data,
        explanations=args.explanations,
        limit=args.limit,
        progress=not args.json,
        cite_only_narrative=_citations(args),
        scores_path=args.scores,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(
        f"{args.run_dir} on {args.data or 'its test data'}: language-model top-1 {metrics['top1']:.2%}, "
        f"top-5 {metrics['top5']:.2%} over {metrics['samples']} samples (the encoder's classifier: "
        f"{metrics['encoder_top1']:.2%})"
        + (f"; per-sample scores in {metrics['scores']}" if "scores" in metrics else "")
    )
    if "faithfulness" in metrics:
        print(
            "explanations: "
            + ", ".join(
                f"{key} {value:.3f}"
                if isinstance(value, float)
                else f"{key} [{', '.join(f'{v:.3f}' for v in value)}]"
                if isinstance(value, list)
                else f"{key} {value}"
                for key, value in metrics["faithfulness"].items()
            )
        )
    return 0


def _citations(args) -> bool | None:
    """--free-citations turns lm.cite_only_narrative off; None keeps the run's setting."""
    return False if args.free_citations else None


def cmd_explain(args) -> int:
    from skelang.runs.stages.lm import explain_run

    records = explain_run(
        args.run_dir,
        args.data,
        args.sample,
        args.count,
        args.strategy,
        args.max_new_tokens,
        cite_only_narrative=_citations(args),
        **({"seed": args.seed} if args.strategy == "sample" else {}),
    )
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for record in records:
        truth = f" (true: {record['label_name']})" if record["label_name"] is not None else ""
        print(
            f"[{record['index']}] {record['name']}: {record['predicted_name']} "
            f"p={record['probability']:.2f}{truth}\n  narrative: {record['narrative']}\n"
            f"  explanation: {record['explanation']}"
        )
    return 0


def _add_train_commands(commands) -> None:
    train = commands.add_parser("train", help="train a model from a YAML configuration")
    train.add_argument(
        "--config",
        help="a configuration file, or the name of a shipped one (skelang config list); with --resume, "
        "the run's own config.yaml when left out",
    )
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="configuration overrides, e.g. optim.lr=0.05 data.streams=[joint,bone]",
    )
    train.add_argument("--out", required=True, help="the run folder to write")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to the run folder)")
    train.add_argument(
        "--streams",
        metavar="all|S1,S2",
        help="one run per input stream in --out/<stream> (resumable), then their ensemble",
    )
    train.set_defaults(func=lambda args, rest: cmd_train(args))

    evaluate = commands.add_parser("eval", help="the metrics of a training run's final checkpoint")
    evaluate.add_argument("run_dir", help="a folder written by skelang train")
    evaluate.add_argument("--data", help="evaluate on all sequences at this path instead of the run's test data")
    evaluate.add_argument("--json", action="store_true", help="print machine-readable JSON")
    evaluate.add_argument(
        "--scores",
        metavar="FILE.npz",
        help="also write the per-sample scores (ids, labels, logits) of --data (default: the run's test data) "
        "to FILE.npz, outside the run folder; the file names its run",
    )
    evaluate.add_argument(
        "--zero-shot", action="store_true", help="an SSF run: text-prototype accuracy on its unseen and seen classes"
    )
    evaluate.add_argument("--unseen", metavar="LABELS", help="comma-separated unseen classes (default: the run's)")
    evaluate.add_argument(
        "--calibration",
        type=float,
        default=0.0,
        help="subtracted from the seen classes' logits in GZSL (calibrated stacking)",
    )
    evaluate.add_argument(
        "--explanations", action="store_true", help="a language-model run: also the faithfulness of its explanations"
    )
    evaluate.add_argument(
        "--limit",
        type=int,
        help="with --explanations: how many samples, spread over the data (default lm.explain_samples)",
    )
    evaluate.add_argument(
        "--free-citations",
        action="store_true",
        help="with --explanations: let explanations cite any action token, not only the narrative's",
    )
    evaluate.set_defaults(func=lambda args, rest: cmd_eval(args))

    explain = commands.add_parser("explain", help="a language-model run's answer and explanation for sequences")
    explain.add_argument("run_dir", help="a folder written by skelang train with stage lm")
    explain.add_argument("--data", help="sequences to explain (default: the run's test data)")
    explain.add_argument("--sample", type=int, help="the index of one sequence (default: the first --count)")
    explain.add_argument("--count", type=int, default=5, help="how many sequences without --sample")
    explain.add_argument("--strategy", default="greedy", choices=("greedy", "beam", "sample"))
    explain.add_argument("--max-new-tokens", type=int, help="explanation length (default lm.max_new_tokens)")
    explain.add_argument("--seed", type=int, default=0, help="with --strategy sample")
    explain.add_argument(
        "--free-citations",
        action="store_true",
        help="let explanations cite any action token, not only the narrative's (lm.cite_only_narrative)",
    )
    explain.add_argument("--json", action="store_true", help="print machine-readable JSON")
    explain.set_defaults(func=lambda args, rest: cmd_explain(args))


def cmd_model_profile(args) -> int:
    from skelang.encoder import profile

    names = {  # each shape flag's keyword of profile()
        "layout": "layout",
        "frames": "num_frames",
        "bodies": "num_bodies",
        "channels": "in_channels",
        "classes": "num_classes",
    }
    flags = {flag: getattr(args, flag) for flag in names}
    if args.run:
        dropped = [f"--{flag}" for flag, value in flags.items() if value is not None]
        dropped += [flag for flag, value in (("--config", args.config), ("--type", args.type)) if value]
        if dropped:
            raise ValueError(f"--run takes the model and the input's shape from the run; drop {', '.join(dropped)}")
        model, sizes = _run_model_and_shape(args.run)
    else:
        if args.config and args.type:
            raise ValueError("--config and --type each give the model; pass one")
        if args.config:
            from skelang.runs import load_config

            model = load_config(args.config, [])["model"]
        else:
            model = {"type": args.type or "hglnet"}
        defaults = {"layout": "ntu25", "frames": 64, "bodies": 2, "channels": 3, "classes": 60}
        sizes = {names[flag]: defaults[flag] if value is None else value for flag, value in flags.items()}
    stats = profile(model, **sizes)
    shapes = {flag: sizes[keyword] for flag, keyword in names.items()}
    if args.step is not None:
        import torch

        from skelang.encoder import step_profile
        from skelang.runs.stages.base import PRECISION_DTYPES

        dtype = PRECISION_DTYPES[args.precision]
        stats["step"] = step_profile(
            model,
            batch_size=args.step,
            top=args.top,
            autocast_dtype=None if dtype == torch.float32 else dtype,
            **sizes,
        )
        stats["step"].update(batch_size=args.step, threads=torch.get_num_threads(), precision=args.precision)
    if args.json:
        print(json.dumps({"model": model, "input": shapes, **stats}, indent=2))
        return 0
    print(
        f"{model.get('type', 'hglnet')}: {stats['parameters']:,} parameters, "
        f"{stats['gflops']:.2f} GFLOPs per sample ({shapes})"
    )
    if args.step is not None:
        step = stats["step"]
        print(
            f"training step of {args.step} samples on the CPU in {step['precision']}, {step['threads']} threads: "
            f"{step['step_ms']:.0f} ms; "
            f"the operators that take its time (self time per step):"
        )
        width = max(len(row["op"]) for row in step["ops"])
        for row in step["ops"]:
            print(f"  {row['op']:<{width}}  {row['self_ms']:9.1f} ms  {row['percent']:5.1f}%  {row['calls']:5d} calls")
    return 0


def _run_model_and_shape(path) -> tuple[dict, dict]:
    """The model section of a trained encoder run (stage encoder or ssf) and the shape of its
    inputs: channels, classes, layout and bodies from its checkpoint, frames from its data
    section. Any other folder is a ValueError naming it."""
    from skelang.runs.directory import CHECKPOINT, open_run
    from skelang.runs.stages.encoder import SHAPE_KEYS, checkpoint_layout

    run = open_run(path)
    if run.stage not in ("encoder", "ssf"):
        raise ValueError(
            f"{run.path}: a {run.stage} run; model profile --run reads runs that train an encoder "
            f"(stage encoder or ssf: the encoder is profiled)"
        )
    checkpoint = run.load_checkpoint()
    missing = [key for key in SHAPE_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{run.file(CHECKPOINT)}: does not keep the input's shape ({', '.join(missing)})")
    sizes = {
        "in_channels": checkpoint["in_channels"],
        "num_classes": checkpoint["num_classes"],
        "layout": checkpoint_layout(run, checkpoint),
        "num_frames": run.config["data"]["num_frames"],
        "num_bodies": checkpoint["num_bodies"],
    }
    return run.config["model"], sizes


def _positive_int(text: str) -> int:
    """argparse type: a positive integer (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_model_commands(commands) -> None:
    from skelang.encoder import PRESETS

    model = commands.add_parser("model", help="inspect encoders")
    actions = model.add_subparsers(dest="model_command", required=True)
    profile = actions.add_parser("profile", help="parameters and GFLOPs per sample of an encoder")
    profile.add_argument("--type", choices=list(PRESETS), help="a preset (default: hglnet)")
    profile.add_argument(
        "--config",
        help="take the model section of this training config instead; the input's shape still comes from "
        "--layout, --frames, --bodies and --classes (NW-UCLA: --layout kinect_v1_20 --frames 52 --bodies 1 "
        "--classes 10)",
    )
    profile.add_argument(
        "--run",
        metavar="RUN",
        help="a trained encoder run (stage encoder or ssf): its model, and its input's shape from its checkpoint "
        "and data.num_frames (no shape flags)",
    )
    profile.add_argument("--layout", help="a skeleton layout (default: ntu25)")
    profile.add_argument("--frames", type=_positive_int, help="frames per sample (default: 64)")
    profile.add_argument("--bodies", type=_positive_int, help="bodies per sample (default: 2)")
    profile.add_argument("--channels", type=_positive_int, help="input channels (3 per stream; default: 3)")
    profile.add_argument("--classes", type=_positive_int, help="classes (default: 60)")
    profile.add_argument(
        "--step",
        type=_positive_int,
        metavar="N",
        help="also profile a training step of N samples (torch.profiler): the operators that take its time",
    )
    profile.add_argument("--top", type=_positive_int, default=15, help="with --step: this many operators")
    profile.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="with --step: the step in float32 or under bfloat16 autocast (train.precision's values on the CPU)",
    )
    profile.add_argument("--json", action="store_true")
    profile.set_defaults(func=lambda args, rest: cmd_model_profile(args))


def cmd_vst_tokenize(args) -> int:
    from skelang.runs.stages.vst import tokenize, write_jsonl

    records = tokenize(args.run_dir, args.data)
    if args.out:
        write_jsonl(records, args.out)
        print(f"wrote {len(records)} narratives to {args.out}")
    else:
        for record in records:
            print(
                f"{record['index']:>5} {record['name']:<24} label {record['label']} "
                f"predicted {record['predicted']}: {record['narrative']}"
            )
    return 0


def cmd_vst_glossary(args) -> int:
    import dataclasses

    from skelang.runs.stages.vst import glossary
    from skelang.vst.glossary import format_glossary

    entries = glossary(args.run_dir)
    print(json.dumps([dataclasses.asdict(e) for e in entries], indent=2) if args.json else format_glossary(entries))
    return 0


def _add_vst_commands(commands) -> None:
    vst = commands.add_parser("vst", help="semantic action tokens of a training run with VST")
    actions = vst.add_subparsers(dest="action", required=True)
    tokenize = actions.add_parser("tokenize", help="each sequence's action narrative")
    tokenize.add_argument("run_dir", help="a VST run (a run of stage: vst)")
    tokenize.add_argument("--data", required=True, help="the sequences (any path skelang data reads)")
    tokenize.add_argument("--out", help="write JSON lines here instead of printing")
    tokenize.set_defaults(func=lambda args, rest: cmd_vst_tokenize(args))
    glossary = actions.add_parser("glossary", help="every code used in training, described in words")
    glossary.add_argument("run_dir", help="a VST run (a run of stage: vst)")
    glossary.add_argument("--json", action="store_true", help="print machine-readable JSON")
    glossary.set_defaults(func=lambda args, rest: cmd_vst_glossary(args))


def cmd_ablate(args) -> int:
    from skelang.runs.ablate import ablate

    table = ablate(args.sweep, args.out, jobs=args.jobs)
    if args.json:
        print(json.dumps(table.to_dict("records"), indent=2))
    else:
        print((Path(args.out) / "results.md").read_text(), end="")
        print(f"wrote {Path(args.out) / 'results.csv'}, results.md and results.png")
    return 0


def _add_ablate_command(commands) -> None:
    parser = commands.add_parser(
        "ablate", help="an ablation sweep: variants of a config, seeds, a table with intervals"
    )
    parser.add_argument(
        "sweep", help="a sweep file (YAML: base, overrides, seeds, variants or grid), or a shipped sweep's name"
    )
    parser.add_argument("--out", required=True, help="the sweep's folder (runs, results.csv, results.md, results.png)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side (each takes its CPU share)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(func=lambda args, rest: cmd_ablate(args))


def cmd_ensemble(args) -> int:
    from skelang.runs.ensemble import ensemble, format_report

    report = ensemble(args.sources, weights=args.weights, search=args.search)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _add_ensemble_command(commands) -> None:
    parser = commands.add_parser("ensemble", help="fuse runs' per-sample scores by sample id (multi-stream ensembles)")
    parser.add_argument("sources", nargs="+", help="run folders (their scores.npz) or scores .npz files")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", nargs="+", type=float, metavar="W", help="one weight per run (default: equal)")
    weights.add_argument(
        "--search",
        nargs="+",
        metavar="VALIDATION",
        help="search the weights (each from 0, 0.5, 1, 1.5, 2) on these validation scores, one per run "
        "in the same order (skelang eval RUN --data VAL --scores FILE); validation samples that are "
        "also test samples are an error",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=lambda args, rest: cmd_ensemble(args))


def cmd_demo(args) -> int:
    from skelang.runs.demo import run_demo

    report = run_demo(
        args.out, args.data, progress=not args.no_progress, echo=(lambda line: None) if args.json else print
    )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _add_demo_command(commands) -> None:
    parser = commands.add_parser("demo", help="HocSLM, VST tokens and the language model's explanations, end to end")
    parser.add_argument("--out", default="runs/demo", help="the folder of the three runs (default runs/demo)")
    parser.add_argument("--data", help="NW-UCLA (folder or archive) instead of the built-in synthetic set")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    parser.set_defaults(func=lambda args, rest: cmd_demo(args))


def _labelled_runs(args) -> dict:
    """args.runs opened (RunDirectory), by their --labels or their folders."""
    from skelang.runs import open_run

    runs = [open_run(path) for path in args.runs]
    labels = args.labels or [str(run.path) for run in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--labels: {len(labels)} labels for {len(runs)} runs")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--labels: each run needs its own label, got {labels}")
    return dict(zip(labels, runs))


def cmd_plot(args) -> int:
    from skelang.runs.plots import plot_curves

    logs = {}
    for label, run in _labelled_runs(args).items():
        logs[label] = run.read_log()
        if not logs[label]:
            raise ValueError(f"{run.path}: its log holds no epoch yet")
    print(f"wrote {plot_curves(logs, args.out, x=args.x)}")
    return 0


def _add_plot_command(commands) -> None:
    parser = commands.add_parser("plot", help="training curves of one or several runs on one figure")
    parser.add_argument("runs", nargs="+", help="run folders written by skelang train")
    parser.add_argument("--out", required=True, help="the figure to write (.png, .pdf or .svg)")
    parser.add_argument(
        "--x",
        choices=("epoch", "minutes"),
        default="epoch",
        help="the horizontal axis: epochs, or wall-clock minutes of training (time to accuracy)",
    )
    parser.add_argument("--labels", nargs="+", help="one legend label per run (default: the run folders)")
    parser.set_defaults(func=lambda args, rest: cmd_plot(args))


def cmd_compare(args) -> int:
    from skelang.runs.compare import check_target, compare_runs, format_comparison, records

    check_target(args.target)
    runs = _labelled_runs(args)
    logs = {label: run.read_log() for label, run in runs.items()}
    for label, run in runs.items():
        if not any(entry.get("test_top1") is not None for entry in logs[label]):
            raise ValueError(f"{run.path}: its log holds no evaluated epoch (test_top1) yet")
    planned = {label: run.config["train"]["epochs"] for label, run in runs.items()}
    table, summary = compare_runs(logs, planned, args.target)
    if args.json:
        print(json.dumps({"runs": records(table), "summary": summary}, indent=2))
    else:
        print(format_comparison(table, summary))
    return 0


def _add_compare_command(commands) -> None:
    parser = commands.add_parser(
        "compare", help="runs side by side: last and best test top-1, time to a target accuracy, mean and std"
    )
    parser.add_argument(
        "runs", nargs="+", help="run folders written by skelang train (finished, or training past their first epoch)"
    )
    parser.add_argument(
        "--target",
        type=float,
        help="a test top-1 fraction (e.g. 0.935): the epoch and minutes at which each run first reached it",
    )
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the run folders)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON (top-1 as fractions)")
    parser.set_defaults(func=lambda args, rest: cmd_compare(args))


def cmd_export(args) -> int:
    from skelang.runs.export import export_run

    report = export_run(args.run_dir, args.format, args.out, force=args.force)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"wrote {report['file']} ({report['format']}, input {report['input_shape']}; largest difference to "
            f"the eager model {report['max_abs_difference']:.2g})"
        )
    return 0


def _add_export_command(commands) -> None:
    parser = commands.add_parser("export", help="a run's model for inference: TorchScript, torch.export or ONNX")
    parser.add_argument("run_dir", help="an encoder, SSF or VST run folder")
    parser.add_argument(
        "--format",
        required=True,
        choices=("torchscript", "exported", "onnx"),
        help="torchscript (skelang's ops; load after import skelang), exported (torch.export "
        "program, plain PyTorch), onnx (needs pip install 'skelang[export]')",
    )
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=lambda args, rest: cmd_export(args))


def cmd_config_show(args) -> int:
    import yaml

    from skelang.runs import load_config

    print(yaml.safe_dump(load_config(args.config, args.overrides), sort_keys=False), end="")
    return 0


def cmd_config_keys(args) -> int:
    from skelang.runs import RunConfig
    from skelang.schema import keys_of

    rows = keys_of(RunConfig)
    if args.json:
        print(json.dumps([{"key": key, "default": default, "help": help} for key, default, help in rows], indent=2))
        return 0
    width = max(len(key) for key, _, _ in rows)
    for key, default, help in rows:
        print(f"{key:<{width}}  {json.dumps(default):<24}  {help}")
    return 0


def cmd_config_list(args) -> int:
    import textwrap

    import yaml

    from skelang.runs import shipped_configs
    from skelang.runs.ablate import shipped_sweeps

    def summary(path: Path) -> str:
        """The file's opening comment up to its first sentence's end, shortened at a word."""
        lines = []
        for line in path.read_text().splitlines():
            if not line.startswith("# ") or line.startswith("#  "):  # the comment ends, or a command
                break
            lines.append(line[2:])
        text = " ".join(lines)
        end = text.find(". ")
        return textwrap.shorten(text if end < 0 else text[: end + 1], width=110, placeholder=" ...")

    for name, path in shipped_configs().items():
        raw = yaml.safe_load(path.read_text()) or {}
        print(f"{name:<24} stage {raw.get('stage', 'encoder'):<8} {summary(path)}")
    print("sweeps (skelang ablate NAME --out DIR):")
    for name, path in shipped_sweeps().items():
        print(f"{name:<24} {'':<14} {summary(path)}")
    return 0


def _add_config_commands(commands) -> None:
    config = commands.add_parser("config", help="resolved configs, every key with its default, the shipped configs")
    actions = config.add_subparsers(dest="config_command", required=True)
    show = actions.add_parser("show", help="a config with every default filled in, as YAML")
    show.add_argument("config", help="a configuration file, or the name of a shipped one")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    show.set_defaults(func=lambda args, rest: cmd_config_show(args))
    keys = actions.add_parser("keys", help="every key with its default and what it does")
    keys.add_argument("--json", action="store_true", help="print machine-readable JSON")
    keys.set_defaults(func=lambda args, rest: cmd_config_keys(args))
    listing = actions.add_parser("list", help="the configs and sweeps shipped with skelang (usable by name)")
    listing.set_defaults(func=lambda args, rest: cmd_config_list(args))


def _load_benchmark_runner():
    """benchmarks/run.py of the source checkout (or of $SKELANG_BENCHMARKS_DIR)."""
    benchmarks_dir = Path(os.environ.get("SKELANG_BENCHMARKS_DIR", SOURCE_ROOT / "benchmarks"))
    run_py = benchmarks_dir / "run.py"
    if not run_py.is_file():
        raise SystemExit(
            f"skelang bench: {run_py} not found. The benchmarks live in a source checkout "
            f"(benchmarks/): use an editable install, or set SKELANG_BENCHMARKS_DIR."
        )
    spec = importlib.util.spec_from_file_location("skelang_benchmarks_run", run_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_bench(args, rest: list[str]) -> int:
    return _load_benchmark_runner().main(rest, prog="skelang bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="skelang", description="skelang: skeleton-based action recognition enhanced by language models"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="versions, CUDA build and registered operators")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=lambda args, rest: cmd_info(args))

    _add_data_commands(commands)
    _add_train_commands(commands)
    _add_config_commands(commands)
    _add_ensemble_command(commands)
    _add_ablate_command(commands)
    _add_demo_command(commands)
    _add_predict_command(commands)
    _add_plot_command(commands)
    _add_compare_command(commands)
    _add_export_command(commands)
    _add_model_commands(commands)
    _add_vst_commands(commands)

    # Options after `bench` belong to benchmarks/run.py (see `skelang bench --help`).
    bench = commands.add_parser("bench", add_help=False, help="run the benchmarks: each op against its reference")
    bench.set_defaults(func=cmd_bench)

    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
        args.overrides = [*args.overrides, *rest]  # key=value after an option (--out DIR a.b=1) count too
        rest = []
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        with ThreadBudget():  # this job's share of the CPUs, beside the other skelang jobs
            return args.func(args, rest)
    except BrokenPipeError as error:
        if not _stdout_gone():  # another pipe broke (a worker, a subprocess): an error like any other
            print(f"skelang {args.command}: error: {error}", file=sys.stderr)
            return 1
        # The reader of the output went away (skelang ... | head): no error message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
    except (ValueError, KeyError, OSError) as error:  # bad input: the message names it
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, OSError) and error.strerror:  # not "[Errno 2] ...: 'name'"
            named = [str(name) for name in (error.filename, error.filename2) if name]
            message = f"{' -> '.join(named)}: {error.strerror}" if named else error.strerror
        print(f"skelang {args.command}: error: {message}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # from torch or an op: its first line; SKELANG_DEBUG=1 for the traceback
        if os.environ.get("SKELANG_DEBUG") == "1":
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"skelang {args.command}: error: {first} (SKELANG_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has closed it (poll reports an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a notebook's stream): not a pipe
        return False


if __name__ == "__main__":
    sys.exit(main())
