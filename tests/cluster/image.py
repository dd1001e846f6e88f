"""What an image gives its containers, read from the Dockerfile skaffold builds it with.

A manifest names an image (``facerank-functions``); ``skaffold.yaml`` says which Dockerfile
target builds it; the target's stages (``FROM <stage>`` chains) say its ``ENV``, ``WORKDIR``,
``ENTRYPOINT`` and ``CMD``. The harness starts a container from exactly those, with the
manifest's ``command``/``args``/``workingDir`` overriding them as Kubernetes does. Base images
from a registry (``python:3.11-slim``) contribute what the harness cannot read; only their
``PATH`` matters here and it is the standard one.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class ImageConfig:
    env: dict[str, str] = field(default_factory=lambda: {"PATH": BASE_PATH})
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    def copy(self) -> ImageConfig:
        return ImageConfig(dict(self.env), self.workdir, list(self.entrypoint), list(self.cmd))


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per logical line: continuations joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = pending + stripped
        pending = ""
        word, _, rest = logical.partition(" ")
        lines.append((word.upper(), rest.strip()))
    return lines


def _expand(value: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables.get(m[1] or m[2], ""), value)


def _exec_form(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def stages(dockerfile: Path) -> dict[str, ImageConfig]:
    """The config of every named stage of ``dockerfile``."""
    args: dict[str, str] = {}
    found: dict[str, ImageConfig] = {}
    current: ImageConfig | None = None
    for instruction, rest in _instructions(dockerfile.read_text(encoding="utf-8")):
        if instruction == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instruction == "FROM":
            words = rest.split()
            base = _expand(words[0], args)
            current = found[base].copy() if base in found else ImageConfig()
            if len(words) == 3 and words[1].upper() == "AS":
                found[words[2]] = current
        elif current is None:
            continue
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                current.env[name] = _expand(value, current.env)
        elif instruction == "WORKDIR":
            current.workdir = rest
        elif instruction == "ENTRYPOINT":
            current.entrypoint = _exec_form(rest)
            current.cmd = []  # an ENTRYPOINT resets an inherited CMD
        elif instruction == "CMD":
            current.cmd = _exec_form(rest)
    return found


def images(root: Path) -> dict[str, ImageConfig]:
    """Image name (as manifests use it) -> its config, for every skaffold artifact."""
    config: dict[str, Any] = yaml.safe_load((root / "skaffold.yaml").read_text(encoding="utf-8"))
    result: dict[str, ImageConfig] = {}
    for artifact in config["build"]["artifacts"]:
        docker = artifact["docker"]
        result[artifact["image"]] = stages(root / docker["dockerfile"])[docker["target"]]
    return result
