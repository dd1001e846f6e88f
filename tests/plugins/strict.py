"""Strict mode: a test that skips because a part is missing fails instead.

Tests skip, saying why, where a part they need is absent (the converted pretrained model, node
and face-api's JavaScript, kubectl, Chromium, the installed console script): a developer can
still run the rest. In CI and ``make test`` that would hollow the suite out without anyone
noticing, so ``FACERANK_TEST_STRICT=1`` (set by the Makefile's ``test`` target) turns every skip,
at collection or in a test, into a failure that carries the skip's reason. Expected failures
(``xfail``) are not skips and stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

STRICT_ENV = "FACERANK_TEST_STRICT"


def strict() -> bool:
    """Whether skips fail: ``FACERANK_TEST_STRICT`` set to anything but ``""`` or ``0``."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{STRICT_ENV}=1 makes this skip a failure: {_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator:
    report = (yield).get_result()
    _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator:
    report = (yield).get_result()
    _fail_skip(report)


def pytest_report_header() -> str:
    return f"{STRICT_ENV}={'1: a skip fails' if strict() else '0: tests may skip'}"
