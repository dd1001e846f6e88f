"""A refused request to a function is one log line with its code and request id, no traceback.

The predictor's line is checked in ``tests/test_predictor.py`` (through the real server) and
the broker's in ``tests/test_broker.py``; this is the functions' shared runtime.
"""

from __future__ import annotations

import logging

import pytest
from flask import Flask, request

from facerank.errors import NotAnImageError
from facerank.requestlog import request_id
from functions.runtime import MAX_EVENT_BYTES, create_function_app


@pytest.fixture
def app() -> Flask:
    app = create_function_app("test-function", api_token="a-token-of-16-chars-or-more")

    @app.post("/")
    def handle() -> str:
        request.get_data()  # a body over the limit is refused here, by Flask
        raise NotAnImageError("data is not a recognised image")

    return app


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "functions.runtime"]


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (
            {"Authorization": "Bearer a-token-of-16-chars-or-more", "ce-id": "ev-1"},
            b"x",
            "POST / 400 not_an_image request_id=ev-1: data is not a recognised image",
        ),
        (
            {"X-Request-ID": "req-9"},
            b"x",
            "POST / 401 unauthorized request_id=req-9: from 127.0.0.1: no valid API token",
        ),
        (
            {"Authorization": "Bearer a-token-of-16-chars-or-more", "X-Request-ID": "req-3"},
            bytes(MAX_EVENT_BYTES + 1),
            "POST / 413 request_entity_too_large request_id=req-3: ",
        ),
    ],
    ids=["typed error", "no token", "too large"],
)
def test_a_refused_request_is_one_line_without_traceback(
    app: Flask,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    body: bytes,
    expected: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="functions.runtime"):
        response = app.test_client().post(
            "/", data=body, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
        )
    assert response.status_code == int(expected.split()[2])
    [line] = lines(caplog)
    assert line.getMessage().startswith(expected)
    assert line.exc_info is None


@pytest.mark.parametrize("given", ["", "a b", "x" * 65, "line\nbreak", "é"])
def test_a_request_id_that_is_not_plain_is_replaced(given: str) -> None:
    made = request_id(given)
    assert made != given
    assert len(made) == 16
    assert made.isalnum()
