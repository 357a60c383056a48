"""What the runtime and target registries share: finding the modules that declare one, and the packages a
declaration needs that this environment lacks."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable
from typing import Any


def declared_in(package_path: Iterable[str], package_name: str, attribute: str) -> dict[str, Any]:
    """Each module of the package that defines `attribute` (RUNTIME, TARGET): that declaration, by its name.
    Private modules (`_name`) are a declaration's helpers, which may import frameworks, and are never read."""
    found = {}
    for info in pkgutil.iter_modules(package_path, f"{package_name}."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        declaration = getattr(importlib.import_module(info.name), attribute, None)
        if declaration is not None:
            found[declaration.name] = declaration
    return found


def missing_packages(packages: Iterable[str]) -> list[str]:
    return [package for package in packages if importlib.util.find_spec(package) is None]
