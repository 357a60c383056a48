"""docker/compose.yaml read as `docker compose config` would: variables from docker/.env.example, then the shell.

No Docker engine runs where the tests run; the topology test starts each service's own command, with the
service's own environment, as a process on loopback.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

# $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME (Compose's forms)
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# Settings .env.example leaves empty because each installation makes its own, as its comments say.
GENERATED = {
    "MODELGATE_WEBHOOK_SECRET": lambda: secrets.token_urlsafe(32),
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
}


class UndefinedVariable(KeyError):
    pass


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


def variables_used(text: str) -> set[str]:
    return {m["braced"] or m["bare"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def interpolate(value: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"]
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in ("-", ":-"):
            return arg
        raise UndefinedVariable(f"{name} is not set{': ' + arg if arg else ''}")

    return _VARIABLE.sub(substitute, value)


def _interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def load(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose model with every variable replaced: .env.example's settings, the GENERATED ones made as the
    user would make them, all overridden as a shell would."""
    env = read_env_file()
    env.update({name: generate() for name, generate in GENERATED.items() if not env.get(name)})
    env.update(overrides or {})
    return _interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def command(model: dict[str, Any], service: str) -> list[str]:
    return [str(part) for part in model["services"][service]["command"]]


def environment(model: dict[str, Any], service: str) -> dict[str, str]:
    values = model["services"][service].get("environment") or {}
    if isinstance(values, list):
        values = dict(item.split("=", 1) for item in values)
    return {key: str(value) for key, value in values.items()}
