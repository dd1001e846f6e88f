"""The CloudEvents HTTP binding's header encoding, which the SDK (1.x) leaves to its users."""

from __future__ import annotations

import pytest
from cloudevents.http import CloudEvent

from facerank.cehttp import from_http, json_data, to_binary
from facerank.errors import InvalidEventError


def event(subject: str) -> CloudEvent:
    attributes = {"type": "dev.test", "source": "/t", "id": "1", "subject": subject}
    return CloudEvent(attributes, {"key": subject})


@pytest.mark.parametrize(
    ("subject", "header"),
    [
        ("alice/1.jpg", "alice/1.jpg"),
        ("Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"),  # the binding specification's example
        ('say "50%"', "say%20%2250%25%22"),
        ("李雷/照片.png", "%E6%9D%8E%E9%9B%B7/%E7%85%A7%E7%89%87.png"),
    ],
)
def test_ce_headers_are_percent_encoded_and_decoded(subject: str, header: str) -> None:
    headers, body = to_binary(event(subject))
    assert headers["ce-subject"] == header
    assert headers["content-type"] == "application/json"
    parsed = from_http(headers, body)
    assert parsed["subject"] == subject
    assert json_data(parsed) == {"key": subject}


def test_raw_utf8_from_a_non_conforming_sender_is_tolerated() -> None:
    headers, body = to_binary(event("x"))
    # What an HTTP server hands over for raw UTF-8 header bytes: their Latin-1 reading.
    headers["ce-subject"] = "zoë/1.jpg".encode().decode("latin-1")
    assert from_http(headers, body)["subject"] == "zoë/1.jpg"


def test_malformed_percent_encoding_is_a_bad_event() -> None:
    headers, body = to_binary(event("x"))
    headers["ce-subject"] = "%FF%FE"
    with pytest.raises(InvalidEventError, match="not a CloudEvent"):
        from_http(headers, body)


def test_data_that_is_not_json_is_a_bad_event() -> None:
    headers, _ = to_binary(event("x"))
    with pytest.raises(InvalidEventError, match="not JSON"):
        json_data(from_http(headers, b"{not json"))
