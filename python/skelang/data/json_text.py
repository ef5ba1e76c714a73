"""JSON documents of the data files, with errors that name the file and the line."""

from __future__ import annotations

import json


def parse_json(text: str | bytes, source: str):
    """json.loads(text); a ValueError "<source>:<line>: ..." for malformed or non-UTF-8 text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{source}: not UTF-8 text: {error}") from None
