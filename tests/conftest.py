"""Shared test helpers.

Real data lives in ../shared/data (relative to the repository root) and is never copied
into the repository. Tests that need it use the `shared_data` fixture: they skip when it
is missing, except under SKELANG_REQUIRE_SHARED_DATA=1 (set by .ci/run), where a missing
file is a failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKELANG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SHARED_CASES = SHARED_DATA.parent / "cases"


def require_shared_data(relative: str, root: Path = SHARED_DATA) -> Path:
    """Path of ../shared/data/<relative>; skips the test (or fails it, when required) if absent."""
    path = root / relative
    if not path.exists():
        message = f"real data {path} is missing"
        if os.environ.get("SKELANG_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{message} and SKELANG_REQUIRE_SHARED_DATA=1")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data():
    return require_shared_data


@pytest.fixture
def shared_case():
    """Path of ../shared/cases/<relative> (inputs shaped like users' files), as shared_data."""
    return lambda relative: require_shared_data(relative, SHARED_CASES)


@pytest.fixture
def at_cpu_level():
    """run(level, module, function): calls `function()` of the test module `module` in a new
    Python process with SKELANG_CPU_LEVEL=level (0: baseline x86-64, 3: AVX2), so that the
    kernels skelang picks at run time are the narrower ones; fails if the level did not take
    effect or the function raised."""
    import sys

    def run(level: int, module: str, function: str) -> None:
        import skelang

        expected = min(level, skelang._C.cpu_level())
        code = (
            f"import skelang, {module}; level = skelang._C.cpu_level(); "
            f"assert level == {expected}, f'SKELANG_CPU_LEVEL={level}: level {{level}}'; {module}.{function}()"
        )
        env = {**os.environ, "SKELANG_CPU_LEVEL": str(level), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    return run


def skelang_cli(*args, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """`skelang ARGS` (from the folder `cwd`) run by skelang.cli.main inside the test's own
    process: the command's parser, commands, error handling and exit status, with standard
    output and error captured as text, without a new Python that imports torch again (3-5 s a
    command). Tests about the process itself (a pipe closed by its reader, a variable read when
    the extension loads, several processes at once) start a real one."""
    from skelang import cli

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    folder = contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), folder:
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return subprocess.CompletedProcess(["skelang", *argv], code, out.getvalue(), err.getvalue())


SYNTHETIC_HGLNET = {
    "seed": 0,
    "data": {"train": "synthetic:40:0", "test": "synthetic:10:1", "num_frames": 16, "num_workers": 0},
    "model": {"type": "hglnet", "channels": [16, 32], "strides": [1, 2], "attention_heads": 2},
    "optim": {"lr": 0.1, "warmup_epochs": 1, "schedule": "cosine"},
    "train": {"epochs": 6, "batch_size": 16, "eval_every": 6},
}


def built_once(tmp_path_factory, name: str, build):
    """`build(folder)` run once per test session, whatever the number of pytest-xdist workers:
    the first worker that asks builds into a folder of the session's shared temporary folder
    while the others wait on a file lock, then every worker reads it (pytest-xdist's documented
    recipe). Returns (folder, what `build` returned, as JSON gives it back). A build that
    fails is not tried again by the other workers: they fail at once with its error."""
    import json
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER") and base.name.startswith("popen-"):
        base = base.parent  # the local workers' folders are popen-gwN under one session folder
    folder, done, failed = base / name, base / f"{name}.json", base / f"{name}.failed"
    with FileLock(f"{folder}.lock"):
        if failed.exists():
            pytest.fail(f"{name}: its build failed in another worker of this session: {failed.read_text()}")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker killed while building
            folder.mkdir()
            try:
                result = build(folder)
            except (Exception, pytest.fail.Exception) as error:  # not a skip or an interrupt
                failed.write_text(f"{type(error).__name__}: {error}")
                raise
            done.write_text(json.dumps(result))
    return folder, json.loads(done.read_text())


def _train_once(tmp_path_factory, name: str, config: dict):
    """(run directory, final metrics) of `config` trained once per test session."""
    import yaml

    from skelang.runs import load_config, train

    def build(folder):
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        return train(load_config(folder / "config.yaml"), folder / "run", progress=False)

    folder, metrics = built_once(tmp_path_factory, name, build)
    return folder / "run", metrics


@pytest.fixture(scope="session")
def synthetic_hglnet_run(tmp_path_factory):
    """A small HGLNet trained on the synthetic set (about 70 s on one core of a 2-core AVX2
    EPYC), shared by the tests of the encoder and of the stages built on it: (run directory,
    final metrics)."""
    return _train_once(tmp_path_factory, "synthetic_hglnet", SYNTHETIC_HGLNET)


@pytest.fixture(scope="session")
def synthetic_vst_run(synthetic_hglnet_run, tmp_path_factory):
    """VST (512 codes, one token per 4 frames) trained for 4 epochs on the frozen synthetic
    HGLNet (about 50 s on one core)."""
    encoder_run, _ = synthetic_hglnet_run
    config = {
        **SYNTHETIC_HGLNET,
        "train": {**SYNTHETIC_HGLNET["train"], "epochs": 4, "eval_every": 4},
        "stage": "vst",
        "vst": {
            "num_codes": 512,
            "code_dim": 32,
            "decay": 0.95,
            "dead_threshold": 0.2,
            "segment_length": 2,
            "switch_penalty": 0.1,
            "encoder_run": str(encoder_run),
        },
    }
    return _train_once(tmp_path_factory, "synthetic_vst", config)


@pytest.fixture(scope="session")
def tiny_language_model(tmp_path_factory):
    """A local folder with a tiny random LlamaForCausalLM and a byte-level BPE tokenizer
    trained on the synthetic descriptions, with a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from skelang.fusion.descriptions import load_descriptions
    from skelang.lm.prompts import INSTRUCTION, SYSTEM

    texts = [SYSTEM, INSTRUCTION, "Motion: Candidates: Action: Explanation: are typical of"]
    for entry in load_descriptions("synthetic"):
        texts += [entry.name, entry.description, entry.body_parts_text()]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts * 4,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<pad>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
    )
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lm_config(vst_run, model_folder, **lm) -> dict:
    return {
        "seed": 0,
        "data": {**SYNTHETIC_HGLNET["data"], "train": "synthetic:4:0", "test": "synthetic:2:1"},
        "optim": {"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0, "schedule": "cosine", "warmup_epochs": 0},
        "train": {"epochs": 2, "batch_size": 12, "test_batch_size": 16, "eval_every": 1},
        "stage": "lm",
        "lm": {
            "vst_run": str(vst_run),
            "model": str(model_folder),
            "descriptions": "synthetic",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.05},
            "max_new_tokens": 12,
            "explain_samples": 4,
            **lm,
        },
    }


# Tests that train (or read a trained run), run the real language model or spawn the benchmarks
# are marked slow: `make test-fast` (pytest -m "not slow") skips them.
SLOW_FIXTURES = {
    "synthetic_hglnet_run",
    "synthetic_vst_run",
    "synthetic_ssf_run",
    "synthetic_lm_run",
    "joint_lm_run",
    "smollm2",
    "finished_run",
    "hug_poses",
    "synthetic_lm_run_for_video",
}
SLOW_TESTS = {
    "test_bench_quick_json_reports_ratios",
    "test_train_and_eval_commands",
    "test_eval_zero_shot_command",
    "test_quantizer_ranks_end_with_identical_codebooks",
    "test_sync_batch_norm_over_two_gloo_ranks_is_batch_norm_over_the_global_batch",
    "test_torchrun_two_gloo_ranks_reach_one_process_weights_and_resume_on_one",
    "test_the_ssf_vst_and_joint_lm_stages_train_under_torchrun",
    "test_export_of_an_encoder_equals_the_eager_model_in_every_format",
    "test_plot_command_draws_several_runs",
    "test_data_extract_builds_a_cache_and_resumes",
    "test_shipped_configs_by_name_and_the_config_commands",
    "test_resume_reaches_the_same_weights",
    "test_the_language_model_loss_reaches_the_encoder",
    "test_default_loads_offline_without_writing_a_cache",
    "test_convert_nw_ucla_test_split_and_load_fast",
    "test_two_trainings_started_together_each_within_2_5x_of_one_alone",
}


# Tests that time themselves against the whole machine: `make test` runs them after the others,
# alone (marker `serial`), so that no other test worker shares the cores they measure.
SERIAL_TESTS = {"test_two_trainings_started_together_each_within_2_5x_of_one_alone"}


# The modules that take longest, longest first, as `make test` on a 2-core AVX2 EPYC measured
# them (seconds, both workers busy): make test hands the modules out in this order (pytest-xdist
# --dist loadfile --no-loadscope-reorder), the rest after them in their own order, so that no
# worker is left with a long one at the end. The second and third (pytest-xdist hands a worker
# its next module while it still has up to two tests to run) do not wait for the session's
# trained runs, which the first builds.
LONGEST_MODULES = (
    "tests/test_distributed.py",  # 250, with the session's trained runs (110)
    "notebooks/07_explanations.ipynb",  # 95-112
    "tests/test_train.py",  # 114
    "tests/test_lm_stage.py",  # 122
    "notebooks/06_ablation.ipynb",  # 85
    "tests/test_encoder.py",  # 79
    "tests/test_ablate.py",  # 75
    "tests/test_cli.py",  # 71
    "tests/test_fusion.py",  # 62
    "tests/test_outputs.py",  # 56
    "tests/test_video.py",  # 45
    "notebooks/00_quickstart.ipynb",  # 35
    "tests/test_reliability.py",  # 32
    "notebooks/05_language_model.ipynb",  # 25
)


def pytest_collection_modifyitems(config, items):
    """Marks the slow and the serial tests, and puts LONGEST_MODULES first. (make test runs
    pytest-xdist with --dist loadfile: a module's tests run on one worker, which builds the
    module's fixtures once; the session's trained runs are built once by `built_once`, whichever
    worker asks first.)"""
    rank = {module: place for place, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        name = getattr(item, "originalname", item.name)
        if fixtures & SLOW_FIXTURES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if name in SERIAL_TESTS:
            item.add_marker(pytest.mark.serial)


def pytest_configure(config):
    """A pytest-xdist worker computes on its share of the cores (and so do the processes its
    tests start), as skelang's thread budget would give it: workers never oversubscribe."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1:
        import torch

        from skelang.threads import available_cpus

        threads = max(1, len(available_cpus()) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
