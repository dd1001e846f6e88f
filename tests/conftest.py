"""Shared pytest configuration: fixtures live in small plugin modules, one job each."""

pytest_plugins = [
    "tests.plugins.s3_server",
    "tests.plugins.faces",
    "tests.plugins.sink",
    "tests.plugins.pretrained",
    "tests.plugins.webhook",
]
