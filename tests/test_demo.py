"""skelang demo's recipe: three steps chained through their run folders (the demo itself is
timed in the session notes: it trains SmolLM2 for minutes)."""

from __future__ import annotations

from skelang.runs.demo import STEPS, demo_configs


def test_the_demo_steps_are_chained_through_the_output_folder(tmp_path):
    configs = demo_configs(tmp_path)
    assert tuple(configs) == STEPS
    assert [configs[step]["stage"] for step in STEPS] == ["ssf", "vst", "lm"]
    assert configs["vst"]["vst"]["encoder_run"] == str(tmp_path / "hocslm")
    assert configs["lm"]["lm"]["vst_run"] == str(tmp_path / "vst")
    assert configs["vst"]["model"] == configs["hocslm"]["model"]  # VST reads the HocSLM encoder


def test_the_demo_on_nw_ucla_uses_its_benchmark_and_descriptions(tmp_path):
    configs = demo_configs(tmp_path, data="/data/nw-ucla")
    for config in configs.values():
        assert config["data"]["train"] == "/data/nw-ucla" and config["data"]["benchmark"] == "nw-ucla-view3"
    assert configs["hocslm"]["ssf"]["descriptions"] == "nw-ucla"
    assert configs["lm"]["lm"]["descriptions"] == "nw-ucla"
