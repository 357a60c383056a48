"""Where the SavedModel is: a SavedModel directory itself, or a TF Serving base path of numbered versions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelgate.errors import NotASavedModel

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
CHUNKED_FILE = "saved_model.cpb"


@dataclass(frozen=True)
class ModelSource:
    model_dir: Path
    version: int | None = None


def _listing(path: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def holds_saved_model(path: Path) -> bool:
    holds = any((path / name).is_file() for name in SAVED_MODEL_FILES)
    if not holds and (path / CHUNKED_FILE).is_file():
        raise NotASavedModel(
            f"{path}: a chunked SavedModel ({CHUNKED_FILE}, the proto splitter's format for graphs over 2 GB), which "
            "this TensorFlow cannot load (open-source TensorFlow has no reader for it); re-export the model without "
            "chunking (tf.saved_model.save without SaveOptions(experimental_image_format=True))"
        )
    return holds


def version_folders(path: Path) -> list[tuple[int, Path]]:
    """The numeric folders of a TF Serving base path with their version, by version. A list, not a dict:
    007 and 7 are both version 7 and neither is dropped here."""
    folders = (p for p in path.iterdir() if p.is_dir() and p.name.isdigit())
    return sorted(((int(p.name), p) for p in folders), key=lambda item: item[0])


def resolve_model_source(path: str | Path, version: int | None = None) -> ModelSource:
    """The SavedModel directory to validate. A base path resolves as TF Serving does: the highest numeric
    version folder, unless a version is asked."""
    path = Path(path)
    if not path.exists():
        raise NotASavedModel(f"{path}: no such directory")
    if not path.is_dir():
        raise NotASavedModel(f"{path}: not a directory (a SavedModel is a directory holding saved_model.pb)")
    if not any(path.iterdir()):
        raise NotASavedModel(
            f"{path}: empty directory; expected saved_model.pb, or numbered version folders (TF Serving base path)"
        )
    if holds_saved_model(path):
        if version is not None:
            raise NotASavedModel(
                f"{path}: version {version} asked, but this is a SavedModel itself, not a TF Serving base path "
                "of numbered version folders"
            )
        return ModelSource(path)
    folders = version_folders(path)
    versions = [number for number, _ in folders]
    if not versions:
        raise NotASavedModel(
            f"{path}: not a SavedModel (no saved_model.pb or saved_model.pbtxt) and not a TF Serving base path "
            f"(no numeric version folders); found {_listing(path)}"
        )
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise NotASavedModel(
            f"{path}: no version {version}; the numeric version folders are {', '.join(map(str, versions))}"
        )
    # A folder named 007 is version 7 to TF Serving; find it by value, not by name.
    chosen = next(folder for number, folder in folders if number == version)
    if not holds_saved_model(chosen):
        present = _listing(chosen) or "nothing"
        raise NotASavedModel(
            f"{chosen}: version {version} of base path {path} holds no saved_model.pb or saved_model.pbtxt; "
            f"found {present}"
        )
    return ModelSource(chosen, version)
