"""Files that readers may open at any moment (the report, its HTML page) are replaced whole, never rewritten in
place: a process killed mid-write (a worker container stopped, an OOM kill) must leave the previous version, not an
empty or truncated file. No fsync: the failures
this guards against kill a process, not the machine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file lives beside the target so that os.replace stays a rename on one file system.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
