"""Action class descriptions (skelang.fusion.descriptions) and the per-sample describe step
(skelang.fusion.describe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from skelang.data.nw_ucla import NW_UCLA_CLASSES
from skelang.data.synthetic import synthetic_class_names
from skelang.fusion.describe import (
    DEFAULT_PROMPT,
    Describer,
    cache_file_name,
    describe_samples,
    load_sample_descriptions,
)
from skelang.fusion.descriptions import (
    BODY_PARTS,
    ActionDescription,
    ActionDescriptions,
    builtin_descriptions,
    extend_descriptions,
    load_descriptions,
)

EXPECTED_COUNTS = {"ntu60": 60, "ntu120": 120, "nw-ucla": 10, "synthetic": 15}


def _entry(label: int, name: str) -> dict:
    return {
        "label": label,
        "name": name,
        "description": f"The person does {name}.",
        "body_parts": {part: f"{part} moves for {name}" for part in BODY_PARTS},
    }


def _write(path: Path, document) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# Built-in descriptions.


def test_builtin_names():
    assert builtin_descriptions() == list(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_builtin_files_load_complete(name):
    descriptions = load_descriptions(name)
    assert descriptions.dataset == name
    assert len(descriptions) == EXPECTED_COUNTS[name]
    assert [entry.label for entry in descriptions.classes] == list(range(len(descriptions)))
    assert len(set(descriptions.names())) == len(descriptions)
    assert len({entry.description for entry in descriptions}) == len(descriptions)
    for entry in descriptions:
        assert entry.name.strip() and entry.description.strip()
        assert tuple(entry.body_parts) == BODY_PARTS
        assert all(isinstance(text, str) and text.strip() for text in entry.body_parts.values())


def test_ntu_spot_checks():
    ntu120 = load_descriptions("ntu120")
    assert ntu120[0].name == "drink water"
    assert ntu120[1].name == "eat meal/snack"
    assert "walking apart" in ntu120[59].name
    assert ntu120[60].name == "put on headphone"
    last = ntu120[119]
    assert "rock-paper-scissors" in last.name or "finger-guessing" in last.name
    ntu60 = load_descriptions("ntu60")
    assert ntu60.names() == ntu120.names()[:60]
    assert ntu60.texts() == ntu120.texts()[:60]


def test_ntu_interactions_mention_the_other_person():
    ntu120 = load_descriptions("ntu120")
    interactions = list(range(49, 60)) + list(range(105, 120))
    for label in interactions:
        text = ntu120.texts("full")[label] + " " + ntu120[label].body_parts_text()
        assert "other person" in text or "each other" in text or "two people" in text, ntu120[label].name


def test_similar_ntu_classes_are_told_apart():
    ntu120 = load_descriptions("ntu120")
    by_name = {entry.name: entry for entry in ntu120}
    pairs = [
        ("wear a shoe", "take off a shoe"),
        ("clapping", "rub two hands together"),
        ("wear jacket", "take off jacket"),
        ("put on headphone", "take off headphone"),
        ("sitting down", "standing up (from sitting position)"),
        ("thumb up", "thumb down"),
    ]
    for first, second in pairs:
        assert first in by_name and second in by_name
        assert by_name[first].description != by_name[second].description
        assert by_name[first].body_parts_text() != by_name[second].body_parts_text()


def test_nw_ucla_and_synthetic_names_match_the_data_modules():
    assert load_descriptions("nw-ucla").names() == [name for _, name in NW_UCLA_CLASSES]
    assert load_descriptions("synthetic").names() == synthetic_class_names()


# The ActionDescriptions API.


def test_texts_kinds():
    descriptions = load_descriptions("ntu120")
    first = descriptions[0]
    assert descriptions.texts("name")[0] == "drink water"
    assert descriptions.texts("description")[0] == first.description
    assert descriptions.texts()[0] == f"drink water: {first.description}"
    assert descriptions.texts("full") == descriptions.texts()
    body = descriptions.texts("body_parts")[0]
    assert body == "; ".join(f"{part}: {first.body_parts[part]}" for part in BODY_PARTS)
    assert body.startswith("head: ") and "; legs: " in body
    for kind in ("name", "description", "full", "body_parts"):
        assert len(descriptions.texts(kind)) == 120
    with pytest.raises(ValueError, match="unknown text kind 'poem'"):
        descriptions.texts("poem")


def test_subset_relabels_in_the_given_order():
    descriptions = load_descriptions("synthetic")
    subset = descriptions.subset([3, 0, 14])
    assert subset.names() == ["squat", "wave", "throw"]
    assert [entry.label for entry in subset] == [0, 1, 2]
    assert subset[0].description == descriptions[3].description
    assert descriptions[3].label == 3  # the original is unchanged
    with pytest.raises(ValueError, match="out of range"):
        descriptions.subset([15])
    with pytest.raises(ValueError, match="repeat"):
        descriptions.subset([1, 1])


def test_extend_appends_and_overrides(tmp_path):
    base = load_descriptions("nw-ucla")
    throw = ActionDescription(
        0, "throw", "The person hurls a ball overhand.", {part: f"{part} of the new throw" for part in BODY_PARTS}
    )
    juggle = ActionDescription(
        1, "juggle", "The person juggles three balls.", {part: f"{part} juggling" for part in BODY_PARTS}
    )
    extended = extend_descriptions(base, ActionDescriptions("mine", [throw, juggle]))
    assert len(extended) == 11 and extended.dataset == "nw-ucla"
    assert extended[8].name == "throw" and extended[8].label == 8
    assert extended[8].description == "The person hurls a ball overhand."
    assert extended[10].name == "juggle" and extended[10].label == 10
    assert extended.names()[:8] == base.names()[:8]
    assert base[8].description != throw.description and len(base) == 10  # base unchanged

    extra = _write(tmp_path / "extra.yaml", {"dataset": "extra", "classes": [_entry(0, "dance"), _entry(1, "carry")]})
    from_file = extend_descriptions(base, extra)
    assert from_file.names() == base.names() + ["dance"]
    assert from_file[9].description == "The person does carry."
    assert [entry.label for entry in from_file] == list(range(11))


def test_to_yaml_round_trip(tmp_path):
    original = load_descriptions("ntu60").subset([5, 1, 58])
    path = tmp_path / "mine.yaml"
    original.to_yaml(path)
    loaded = load_descriptions(path)
    assert loaded.dataset == "ntu60"
    assert loaded.classes == original.classes
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]  # no temporary file left
    load_descriptions("synthetic").to_yaml(path)  # replaces the file
    assert load_descriptions(path).names() == synthetic_class_names()


# Validation.


def test_missing_body_part_names_file_and_entry(tmp_path):
    entry = _entry(1, "jog")
    del entry["body_parts"]["torso"]
    path = _write(tmp_path / "bad.yaml", {"dataset": "x", "classes": [_entry(0, "walk"), entry]})
    with pytest.raises(ValueError, match=r"bad\.yaml: class 1 \('jog'\).*missing key\(s\) torso"):
        load_descriptions(path)


def test_empty_body_part_is_an_error(tmp_path):
    entry = _entry(0, "walk")
    entry["body_parts"]["legs"] = "  "
    path = _write(tmp_path / "bad.yaml", {"dataset": "x", "classes": [entry]})
    with pytest.raises(ValueError, match=r"bad\.yaml: class 0 \('walk'\): body part 'legs' must be a non-empty"):
        load_descriptions(path)


def test_duplicate_name_names_file_and_entry(tmp_path):
    path = _write(tmp_path / "dup.yaml", {"dataset": "x", "classes": [_entry(0, "walk"), _entry(1, "walk")]})
    with pytest.raises(ValueError, match=r"dup\.yaml: class 1 \('walk'\): duplicate name"):
        load_descriptions(path)


def test_wrong_label_order_names_file_and_entry(tmp_path):
    path = _write(tmp_path / "order.yaml", {"dataset": "x", "classes": [_entry(1, "walk"), _entry(0, "run")]})
    with pytest.raises(ValueError, match=r"order\.yaml: class 0 \('walk'\): label 1, expected 0"):
        load_descriptions(path)


def test_unknown_key_names_file_and_entry(tmp_path):
    entry = _entry(0, "walk")
    entry["colour"] = "blue"
    path = _write(tmp_path / "keys.yaml", {"dataset": "x", "classes": [entry]})
    with pytest.raises(ValueError, match=r"keys\.yaml: class 0 \('walk'\): unknown key\(s\) colour"):
        load_descriptions(path)
    entry = _entry(0, "walk")
    entry["body_parts"]["tail"] = "wags"
    _write(path, {"dataset": "x", "classes": [entry]})
    with pytest.raises(ValueError, match=r"keys\.yaml: class 0 \('walk'\): body_parts: unknown key\(s\) tail"):
        load_descriptions(path)
    _write(path, {"dataset": "x", "classes": [_entry(0, "walk")], "version": 2})
    with pytest.raises(ValueError, match=r"keys\.yaml: unknown key\(s\) version"):
        load_descriptions(path)


def test_unknown_source_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="neither a built-in description set"):
        load_descriptions("ntu999")
    path = tmp_path / "broken.yaml"
    path.write_text("dataset: [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.yaml: cannot read"):
        load_descriptions(path)


# The describe step, with a fake vision-language model.


class FakeDescriber:
    def __init__(self, model: str = "fake-vlm-1", answer: str = "A person waves; head still; hands wave."):
        self.model = model
        self.answer = answer
        self.calls: list[tuple[Path, str]] = []

    def __call__(self, video: Path, prompt: str) -> str:
        self.calls.append((video, prompt))
        return self.answer


@pytest.fixture
def videos(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "videos"
    folder.mkdir()
    paths = {}
    for sample in ("S001C001P001R001A001", "clip 2/with:odd*chars"):
        path = folder / f"{len(paths)}.mp4"
        path.write_bytes(b"not really a video")
        paths[sample] = path
    return paths


def test_fake_describer_fits_the_protocol():
    assert isinstance(FakeDescriber(), Describer)
    assert "head" in DEFAULT_PROMPT and "legs" in DEFAULT_PROMPT


def test_describe_samples_caches(tmp_path, videos):
    cache = tmp_path / "cache"
    describer = FakeDescriber()
    records = describe_samples(videos, describer, cache)
    assert list(records) == list(videos)
    assert len(describer.calls) == 2 and describer.calls[0] == (videos["S001C001P001R001A001"], DEFAULT_PROMPT)
    record = records["S001C001P001R001A001"]
    assert record["text"] == describer.answer and record["model"] == "fake-vlm-1"
    assert record["prompt"] == DEFAULT_PROMPT and record["video"] == str(videos["S001C001P001R001A001"])
    assert record["time"].endswith("+00:00")
    # One JSON file per sample, safe names, no temporary files left.
    files = sorted(p.name for p in cache.iterdir())
    assert files == sorted(cache_file_name(sample) for sample in videos)
    assert all("/" not in name and ":" not in name and "*" not in name for name in files)
    assert json.loads((cache / cache_file_name("S001C001P001R001A001")).read_text()) == record

    again = describe_samples(videos, describer, cache)
    assert len(describer.calls) == 2  # all reused from the cache
    assert again == records
    assert load_sample_descriptions(cache) == records

    describe_samples(videos, describer, cache, overwrite=True)
    assert len(describer.calls) == 4


def test_describe_samples_provenance(tmp_path, videos):
    cache = tmp_path / "cache"
    describe_samples(videos, FakeDescriber(), cache)
    other_prompt = FakeDescriber()
    records = describe_samples(videos, other_prompt, cache, prompt="What happens?")
    assert len(other_prompt.calls) == 2
    assert all(record["prompt"] == "What happens?" for record in records.values())
    other_model = FakeDescriber(model="fake-vlm-2", answer="Someone greets.")
    records = describe_samples(videos, other_model, cache, prompt="What happens?")
    assert len(other_model.calls) == 2
    assert load_sample_descriptions(cache) == records
    assert {record["model"] for record in records.values()} == {"fake-vlm-2"}


def test_describe_samples_errors(tmp_path, videos):
    missing = {"gone": tmp_path / "missing.mp4"}
    with pytest.raises(ValueError, match=r"'gone'.*missing\.mp4"):
        describe_samples(missing, FakeDescriber(), tmp_path / "cache")
    with pytest.raises(ValueError, match=r"'S001C001P001R001A001'.*'silent-vlm'.*empty"):
        describe_samples(videos, FakeDescriber(model="silent-vlm", answer="  "), tmp_path / "cache")


def test_load_sample_descriptions_names_a_malformed_file(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_sample_descriptions(cache)
    (cache / "broken.json").write_text(json.dumps({"sample": "x", "text": "t"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: missing key\(s\) video"):
        load_sample_descriptions(cache)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import skelang.fusion.descriptions as module

    path = tmp_path / "mine.yaml"
    load_descriptions("synthetic").to_yaml(path)
    before = path.read_text()

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        load_descriptions("nw-ucla").to_yaml(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]
