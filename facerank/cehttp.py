"""The CloudEvents HTTP binding for every facerank process: broker, functions, event source.

Two things the SDK (cloudevents 1.x) does not do, and why they matter here:

* Header encoding. The HTTP binding requires binary-mode ``ce-*`` header values to be
  percent-encoded outside printable ASCII (and for space, ``"`` and ``%``). Object keys carry
  people's names (``李雷/照片.png``): unencoded, they cannot even be sent. Received headers are
  decoded the same way, and raw UTF-8 from a non-conforming sender is tolerated.
* Data bytes. The SDK decodes data into Python values and encodes them again, which turns a
  ``text/plain`` body ``hello`` into ``"hello"``. A broker must forward what it was given, so
  every event parsed here carries its data as the exact bytes a binary-mode body would hold
  (or ``None``); :func:`json_data` reads it as JSON where a handler wants values.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from cloudevents.conversion import to_binary as _sdk_to_binary
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent
from cloudevents.http import from_http as _sdk_from_http
from cloudevents.sdk.converters import is_binary

from facerank.errors import InvalidEventError

STRUCTURED = "application/cloudevents+json"

_CONTEXT_ATTRIBUTES = (
    "specversion",
    "type",
    "source",
    "subject",
    "id",
    "time",
    "dataschema",
    "datacontenttype",
)
"""Knative's filter sees these on every event, as ``""`` when unset."""


_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
"""Printable ASCII but ``"`` and ``%``: what a ``ce-*`` header value may carry unencoded."""


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Parse a binary- or structured-mode request; raises :class:`InvalidEventError`."""
    try:
        lowered = {
            name.lower(): _decode_header(value) if name.lower().startswith("ce-") else value
            for name, value in headers.items()
        }
        event = _sdk_from_http(lowered, body, data_unmarshaller=_keep)
    except (GenericException, ValueError, TypeError, binascii.Error) as exc:
        raise InvalidEventError(f"not a CloudEvent: {exc}") from None
    missing = [name for name in ("id", "source", "type") if not event.get(name)]
    if missing:
        raise InvalidEventError(f"empty required attribute(s): {', '.join(missing)}")
    if is_binary(lowered):
        return event
    return CloudEvent(dict(event.get_attributes()), _structured_bytes(event))


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers (``ce-*`` percent-encoded) and body, as Knative delivers events.

    Data that is not bytes yet (a dict from :func:`facerank.events.object_event`) is written
    as JSON; bytes are sent as they are.
    """
    headers, body = _sdk_to_binary(event, data_marshaller=_marshal)
    encoded = {
        name: urllib.parse.quote(value, safe=_HEADER_SAFE) if name.startswith("ce-") else value
        for name, value in headers.items()
    }
    if body and "content-type" not in encoded:
        encoded["content-type"] = "application/json"
    return encoded, body or b""


def json_data(event: CloudEvent) -> Any:
    """The event's data read as JSON (None when it has none); :class:`InvalidEventError` if not
    JSON."""
    data = event.get_data()
    if data is None or not isinstance(data, bytes | str):
        return data
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidEventError(f"event data is not JSON: {exc}") from None


def to_document(event: CloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object: data readable when it is JSON or text, else base64."""
    document: dict[str, Any] = dict(event.get_attributes())
    data = event.get_data()
    if data is not None:
        document.update(_data_member(document.get("datacontenttype"), data))
    return document


def from_document(document: Mapping[str, Any]) -> CloudEvent:
    """Inverse of :func:`to_document`."""
    return from_http({"content-type": STRUCTURED}, json.dumps(document).encode())


def carries_event(headers: Mapping[str, str]) -> bool:
    """Whether a response is a CloudEvent, judged like Knative: by headers, never by the body."""
    lowered = {name.lower(): value for name, value in headers.items()}
    media_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    return "ce-specversion" in lowered or media_type == STRUCTURED


def filter_attributes(event: CloudEvent) -> dict[str, str]:
    """What a Trigger filter compares: context attributes and extensions, as strings."""
    attributes = dict.fromkeys(_CONTEXT_ATTRIBUTES, "")
    attributes.update((name, str(value)) for name, value in event.get_attributes().items())
    return attributes


def _keep(data: Any) -> Any:
    return data


def _marshal(data: Any) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data, ensure_ascii=False).encode()


def _decode_header(value: str) -> str:
    """Undo the binding's percent-encoding. A value with raw non-ASCII characters came from a
    sender that sent UTF-8 unencoded; HTTP servers hand it over as Latin-1, so re-decode it."""
    if not value.isascii():
        try:
            return value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return value
    return urllib.parse.unquote(value, errors="strict") if "%" in value else value


def _structured_bytes(event: CloudEvent) -> bytes | None:
    """Bytes of a structured event's data: ``data_base64`` decoded, or ``data`` as JSON text
    (a JSON string under a non-JSON content type is the text itself, per the JSON format)."""
    data = event.get_data()
    if data is None or isinstance(data, bytes):
        return data
    value = json.loads(data)
    if isinstance(value, str) and not _is_json(event.get("datacontenttype")):
        return value.encode()
    return json.dumps(value, ensure_ascii=False).encode()


def _data_member(content_type: str | None, data: bytes) -> dict[str, Any]:
    if _is_json(content_type):
        try:
            return {"data": json.loads(data)}
        except ValueError:
            pass
    elif (content_type or "").lower().startswith("text/"):
        try:
            return {"data": data.decode()}
        except UnicodeDecodeError:
            pass
    return {"data_base64": base64.b64encode(data).decode("ascii")}


def _is_json(content_type: str | None) -> bool:
    """JSON unless said otherwise: the CloudEvents JSON format's default for ``data``."""
    if not content_type:
        return True
    media_type = content_type.split(";")[0].strip().lower()
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")
