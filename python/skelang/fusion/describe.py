"""The `describe` step: per-sample text descriptions of videos from a vision-language model.

The library ships no vision-language model; the user plugs in one they run locally as a
Describer (anything with a `model` name and a `__call__(video, prompt) -> str`). Answers
are cached on disk, one JSON file per sample, together with their provenance (model,
prompt, time), so that a rerun only asks the model about samples that are new or whose
model or prompt changed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from skelang.files import write_text_atomic

DEFAULT_PROMPT = (
    "Describe the action the person performs in this video in one sentence, then say in a few "
    "words how each of these body parts moves: head, hands, arms, torso and legs."
)
RECORD_KEYS = ("sample", "video", "text", "model", "prompt", "time")


@runtime_checkable
class Describer(Protocol):
    """A vision-language model: `model` names it (recorded with every answer)."""

    model: str

    def __call__(self, video: Path, prompt: str) -> str:
        """The model's answer to `prompt` about the video file `video`."""
        ...


def cache_file_name(sample: str) -> str:
    """A file name for a sample id: characters other than letters, digits, '-', '_' and '.'
    become '_', and a hash of the id keeps ids that differ only there apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sample).lstrip(".") or "_"
    if safe != sample:
        safe = f"{safe[:100]}-{_stable_hash(sample)}"
    return f"{safe}.json"


def describe_samples(
    videos: dict[str, Path],
    describer: Describer,
    cache_dir: str | os.PathLike,
    prompt: str = DEFAULT_PROMPT,
    overwrite: bool = False,
) -> dict[str, dict]:
    """Description records of every sample of `videos` (sample id -> video file), in its order.

    A record is {"sample", "video", "text", "model", "prompt", "time" (ISO 8601, UTC)}. Each
    is cached as one JSON file in cache_dir; a cached record is reused when it was made by
    the same model with the same prompt (and overwrite is False), otherwise the describer
    is asked again and the file replaced atomically.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = str(describer.model)
    records = {}
    for sample, video in videos.items():
        video = Path(video)
        if not video.is_file():
            raise ValueError(f"sample {sample!r}: video file {video} does not exist")
        path = cache_dir / cache_file_name(sample)
        cached = None if overwrite else _read_cached(path)
        if (
            cached is not None
            and cached["sample"] == sample
            and cached["model"] == model
            and cached["prompt"] == prompt
        ):
            records[sample] = cached
            continue
        text = describer(video, prompt)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"sample {sample!r}: model {model!r} gave an empty description of {video}")
        record = {
            "sample": sample,
            "video": str(video),
            "text": text.strip(),
            "model": model,
            "prompt": prompt,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_text_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        records[sample] = record
    return records


def load_sample_descriptions(cache_dir: str | os.PathLike) -> dict[str, dict]:
    """Every record cached in cache_dir, by sample id (files in name order)."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise ValueError(f"{cache_dir}: not a folder of sample descriptions")
    records = {}
    for path in sorted(cache_dir.glob("*.json")):
        record = _read_record(path)
        records[record["sample"]] = record
    return records


def _read_cached(path: Path) -> dict | None:
    """The record in `path`, or None when there is none or it is unreadable (it is then
    recomputed and replaced)."""
    if not path.is_file():
        return None
    try:
        return _read_record(path)
    except ValueError:
        return None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON sample description: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {', '.join(RECORD_KEYS)}")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(RECORD_KEYS)}")
    wrong = [key for key in RECORD_KEYS if not isinstance(record[key], str)]
    if wrong:
        raise ValueError(f"{path}: key(s) {', '.join(wrong)} must be strings")
    return record


def _stable_hash(text: str) -> str:
    """8 hex digits that depend only on `text` (unlike hash(), stable across runs)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
