"""Settings: environment parsing, overrides, validation, and secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from facerank.errors import ConfigError
from facerank.settings import Settings


def test_defaults_need_no_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.store == "folder"
    assert settings.predictor_port == 8080
    assert settings.faces_bucket == "faces"
    assert settings.model == "auto"
    assert settings.s3_access_key == settings.s3_secret_key == ""
    assert settings.detector == "ssd"
    assert settings.min_face_confidence is None  # each detector's own measured threshold


def test_environment_is_parsed_and_flags_win(tmp_path: Path) -> None:
    env = {
        "FACERANK_DATA_DIR": str(tmp_path),
        "FACERANK_PREDICTOR_PORT": "9090",
        "FACERANK_MIN_FACE_CONFIDENCE": "0.5",
        "FACERANK_MODEL": "from-env",
    }
    settings = Settings.from_env(env, model="from-flag", max_faces=None)
    assert settings.data_dir == tmp_path
    assert settings.buckets_dir == tmp_path / "buckets"
    assert settings.predictor_port == 9090
    assert settings.min_face_confidence == 0.5
    assert settings.model == "from-flag"
    assert settings.max_faces == 20  # None overrides are ignored


def test_secret_from_a_mounted_file_stays_out_of_repr(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-value\n")
    settings = Settings.from_env(
        {
            "FACERANK_STORE": "s3",
            "FACERANK_S3_ENDPOINT": "http://127.0.0.1:9000",
            "FACERANK_S3_ACCESS_KEY": "access-value",
            "FACERANK_S3_SECRET_KEY_FILE": str(secret_file),
        }
    )
    assert settings.s3_secret_key == "s3cr3t-value"
    assert "s3cr3t" not in repr(settings)
    assert "access-value" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACERANK_PREDICTOR_PORT": "eighty"}, "FACERANK_PREDICTOR_PORT must be an integer"),
        ({"FACERANK_PREDICTOR_PORT": "70000"}, "out of range"),
        ({"FACERANK_STORE": "ftp"}, "FACERANK_STORE must be"),
        ({"FACERANK_STORE": "s3"}, "FACERANK_S3_ENDPOINT is required"),
        ({"FACERANK_S3_ENDPOINT": "minio:9000"}, "must start with http"),
        ({"FACERANK_MAX_FACES": "0"}, "FACERANK_MAX_FACES must be positive"),
        ({"FACERANK_MIN_FACE_CONFIDENCE": "high"}, "must be a number"),
        ({"FACERANK_ALIGN": "nose"}, "FACERANK_ALIGN must be"),
        ({"FACERANK_DETECTOR": "hog"}, "FACERANK_DETECTOR must be 'ssd' or 'haar'"),
        (
            {"FACERANK_MIN_FACE_CONFIDENCE": "1.5"},
            r"FACERANK_MIN_FACE_CONFIDENCE must be in \[0, 1\)",
        ),
        ({"FACERANK_S3_SECRET_KEY_FILE": "/nonexistent/secret"}, "unreadable file"),
        ({"FACERANK_STOP_TIMEOUT_S": "0"}, "FACERANK_STOP_TIMEOUT_S must be positive"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_one_setting_is_read_alone_and_validated_as_all_are() -> None:
    """The launcher reads its stop timeout alone: another setting's bad value is not its
    business (the component reports it), its own is."""
    broken_elsewhere = {"FACERANK_STORE": "ftp"}
    assert Settings.one_from_env("stop_timeout_s", broken_elsewhere) is None
    env = {**broken_elsewhere, "FACERANK_STOP_TIMEOUT_S": "2.5"}
    assert Settings.one_from_env("stop_timeout_s", env) == 2.5
    with pytest.raises(ConfigError, match="FACERANK_STOP_TIMEOUT_S must be positive"):
        Settings.one_from_env("stop_timeout_s", {"FACERANK_STOP_TIMEOUT_S": "-1"})
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.one_from_env("colour", {})


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, colour="blue")
