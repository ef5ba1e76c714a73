"""Every shipped training config resolves against the schema and names a valid model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skelang.encoder import encoder_config
from skelang.runs import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "python" / "skelang" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_resolves(path):
    config = load_config(path)
    if config["stage"] != "lm":
        encoder_config(config["model"])
    if config["stage"] == "ssf":
        from skelang.fusion.descriptions import load_descriptions

        descriptions = load_descriptions(config["ssf"]["descriptions"])
        assert all(label < len(descriptions) for label in config["ssf"]["unseen"])


def test_every_family_has_a_config():
    names = {p.stem for p in CONFIGS}
    for expected in (
        "synthetic_stgcn",
        "synthetic_vst",
        "synthetic_ssf",
        "nw_ucla_ctrgcn",
        "nw_ucla_hglnet",
        "nw_ucla_vst",
        "nw_ucla_ssf",
        "nw_ucla_hocslm",
        "nw_ucla_zeroshot_ssf",
        "ntu60_xsub_hglnet",
        "ntu60_xsub_ctrgcn",
        "ntu120_xsub_hglnet",
        "ntu120_xsub_ctrgcn",
        "ntu60_xsub_ssf",
        "ntu60_zeroshot_ssf",
    ):
        assert expected in names


BASE = {"data": {"train": "synthetic:1:0", "test": "synthetic:1:1"}, "model": {"type": "stgcn"}}


def test_yaml_1_2_numbers_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE) + "optim:\n  lr: 5e-4\n  weight_decay: 1E-4\n")
    config = load_config(path, ["optim.momentum=5e-1", "optim.gamma=.5"])
    assert config["optim"]["lr"] == 5e-4 and config["optim"]["weight_decay"] == 1e-4
    assert config["optim"]["momentum"] == 0.5 and config["optim"]["gamma"] == 0.5
    for bad in ("optim.lr=.nan", "optim.lr=.inf", "optim.weight_decay=-.inf"):
        with pytest.raises(ValueError, match="expected a"):
            load_config(path, [bad])


def test_every_section_names_unknown_keys_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    for override, message in [
        ("model.chanels=[8]", "unknown key model.chanels (did you mean model.channels?)"),
        ("data.augmentation.rotation=5", "did you mean data.augmentation.rotation_degrees?"),
        ("stage=ssf", "ssf.descriptions: expected a set of action descriptions"),
        ("vst.num_codes=8", "vst: a section of stage vst, but this config's stage is encoder"),
        ("stage=vst vst.num_cods=8", "unknown key vst.num_cods (did you mean vst.num_codes?)"),
    ]:
        with pytest.raises(ValueError) as error:
            load_config(path, override.split())
        assert message in str(error.value)
        assert str(error.value).startswith(f"{path} with the overrides {override}: ")  # not the file alone


def test_a_bad_key_of_a_file_names_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False) + "train:\n  epochs: -2\n  epohcs: 3\n")
    train_line = len(yaml.safe_dump(BASE, sort_keys=False).splitlines()) + 1
    with pytest.raises(ValueError) as error:
        load_config(path)
    message = str(error.value)
    assert f"train.epochs (line {train_line + 1}): expected a positive integer, got -2" in message
    assert f"unknown key train.epohcs (line {train_line + 2}) (did you mean train.epochs?)" in message
    assert message.startswith(f"{path}: ")
    with pytest.raises(ValueError) as error:  # a key an override sets: no line of the file
        load_config(path, ["train.epochs=-1"])
    assert "train.epochs: expected a positive integer, got -1" in str(error.value)


def test_configs_of_earlier_versions_are_converted(tmp_path):
    """Stages switched by ssf/vst/lm.enabled with every section present (an old config.yaml)."""
    from skelang.runs.config import resolve_config

    old = {
        **BASE,
        "vst": {"enabled": True, "num_codes": 8, "encoder_run": "runs/x"},
        "ssf": {"enabled": False, "descriptions": None},
        "lm": {"enabled": False, "joint": {"enabled": False}},
    }
    config = resolve_config(old)
    assert config["stage"] == "vst" and config["vst"]["num_codes"] == 8 and "ssf" not in config and "lm" not in config
    assert resolve_config({**BASE, "vst": {"enabled": False, "num_codes": 3}})["stage"] == "encoder"
    with pytest.raises(ValueError, match="train one stage at a time"):
        resolve_config({**BASE, "vst": {"enabled": True}, "ssf": {"enabled": True, "descriptions": "synthetic"}})
    lm = resolve_config(
        {"data": BASE["data"], "model": {}, "lm": {"enabled": True, "vst_run": "r", "descriptions": "x"}}
    )
    assert lm["stage"] == "lm" and "model" not in lm


def test_shipped_configs_by_name_and_the_config_commands(tmp_path):
    from conftest import skelang_cli

    config = load_config("synthetic_stgcn", ["train.epochs=1"])
    assert config["train"]["epochs"] == 1
    with pytest.raises(ValueError, match="no shipped config of that name"):
        load_config("no_such_config")
    shown = skelang_cli("config", "show", "synthetic_stgcn", "optim.lr=5e-4", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["optim"]["lr"] == 5e-4
    keys = skelang_cli("config", "keys", cwd=tmp_path)
    assert keys.returncode == 0 and "optim.lr" in keys.stdout and "model.attention_heads" in keys.stdout
    assert "lm.lora.r" in keys.stdout and "vst.num_codes" in keys.stdout
    listed = skelang_cli("config", "list", cwd=tmp_path)
    assert "nw_ucla_hglnet" in listed.stdout and "stage lm" in listed.stdout
    assert "\nnw_ucla_lora_rank " in listed.stdout  # the shipped sweeps too
    assert "LoRA's rank for the language-model stage (alpha = 2 r).\n" in listed.stdout  # whole sentences
