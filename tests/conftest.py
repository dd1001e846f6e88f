"""Shared pytest configuration: fixtures live in small plugin modules, one job each."""

pytest_plugins = [
    "pytester",
    "tests.plugins.http",
    "tests.plugins.s3_server",
    "tests.plugins.faces",
    "tests.plugins.sink",
    "tests.plugins.pretrained",
    "tests.plugins.strict",
    "tests.plugins.order",
    "tests.plugins.faceapi_js",
    "tests.plugins.webhook",
]
