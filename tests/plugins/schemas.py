"""Offline schemas of custom resources (Knative, KServe, skaffold), as strict as kubectl's.

The schemas are committed in ``tests/schemas`` (its README names each one's upstream project and
version, and how to refresh them), so the suite needs nothing beside the repository. The CRD
schemas allow unknown fields
(the API server prunes them silently), so a typo would validate and change nothing but
behaviour; :func:`custom_resource_schema` closes every object that lists its properties, the
way ``kubectl --validate=strict`` treats them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
"""The object metadata manifests may set (the CRD schemas leave it open or out)."""


def schema_path(api_version: str, kind: str) -> Path:
    """``<group>_<Kind>_<version>.json``, the naming of ``tests/schemas``."""
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / f"{group}_{kind}_{version}.json"


@cache
def custom_resource_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD's schema with the root fields it lacks, closed where it lists properties.

    Cached and shared: callers must not modify it.
    """
    schema = json.loads(schema_path(api_version, kind).read_text(encoding="utf-8"))
    schema.setdefault("properties", {}).update(
        apiVersion={"const": api_version},
        kind={"const": kind},
        metadata=copy.deepcopy(METADATA),
    )
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
    close_listed_objects(schema)
    return schema


def close_listed_objects(node: Any) -> None:
    """``additionalProperties: false`` where a node lists properties and keeps no unknowns."""
    if isinstance(node, dict):
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for value in node.values():
            close_listed_objects(value)
    elif isinstance(node, list):
        for value in node:
            close_listed_objects(value)
