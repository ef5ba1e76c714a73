"""Every shipped training config resolves against the schema and names a valid model."""

from __future__ import annotations

from pathlib import Path

import pytest

from skelang.encoder import encoder_config
from skelang.train import load_config

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml") if p.name != "bench.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_resolves(path):
    config = load_config(path)
    encoder_config(config["model"])
    if config["ssf"]["enabled"]:
        from skelang.fusion.descriptions import load_descriptions

        descriptions = load_descriptions(config["ssf"]["descriptions"])
        assert all(label < len(descriptions) for label in config["ssf"]["unseen"])


def test_every_family_has_a_config():
    names = {p.stem for p in CONFIGS}
    for expected in ("synthetic_stgcn", "synthetic_vst", "synthetic_ssf", "nw_ucla_ctrgcn", "nw_ucla_hglnet",
                     "nw_ucla_vst", "nw_ucla_ssf", "nw_ucla_zeroshot_ssf", "ntu60_xsub_hglnet", "ntu60_xsub_ctrgcn",
                     "ntu120_xsub_hglnet", "ntu120_xsub_ctrgcn", "ntu60_xsub_ssf", "ntu60_zeroshot_ssf"):
        assert expected in names
