"""Settings come from env vars, are validated with fix-it messages, and are read once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inference.models.mock import MockModel
from inference.schema import Defaults
from inference.settings import Settings, describe_settings_errors, get_settings
from inference.validation import Validator


def test_defaults_work_without_any_env() -> None:
    s = Settings()
    assert (s.model, s.port, s.host, s.max_batch_size, s.auth_token) == (
        "mock",
        8000,
        "127.0.0.1",
        8,
        None,
    )


def test_env_vars_are_read_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("max_wait_ms", "2.5")
    monkeypatch.setenv("AUTH_TOKEN", "s3cret")
    monkeypatch.setenv("MODEL", "/models/sd")
    s = Settings()
    assert (s.max_batch_size, s.max_wait_ms, s.model) == (16, 2.5, "/models/sd")
    assert s.auth_token is not None and s.auth_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    assert Settings(port=9100).port == 9100


def test_empty_auth_token_means_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKEN", "")
    assert Settings().auth_token is None


def test_empty_model_revision_means_unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REVISION", "")  # an empty Space variable
    assert Settings().model_revision is None


def test_errors_name_the_variable_and_mask_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError) as info:
        Settings(auth_token=7)  # type: ignore[arg-type]
    assert "s3cr3t-value" not in str(info.value)
    messages = describe_settings_errors(info.value)
    assert "MAX_BATCH_SIZE=0: Input should be greater than or equal to 1" in messages
    assert "AUTH_TOKEN=***: Input should be a valid string" in messages


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    first = get_settings()
    monkeypatch.setenv("PORT", "9002")
    assert get_settings() is first and first.port == 9001
    get_settings.cache_clear()
    assert get_settings().port == 9002


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"PORT": "http"}, "port"),
        ({"DEVICE": "tpu"}, "device"),
        ({"DEFAULT_STEPS": "80", "MAX_STEPS": "50"}, "DEFAULT_STEPS=80 exceeds MAX_STEPS=50"),
        ({"DEFAULT_WIDTH": "500"}, "DEFAULT_WIDTH must be a multiple of 8, got 500"),
    ],
)
def test_invalid_env_is_refused_with_a_message(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], text: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=text):
        Settings()


def test_settings_override_model_defaults() -> None:
    model = MockModel()  # 20 steps, weight 1.0, 256x256
    s = Settings(default_steps=4, default_prompt_weight=0.0, default_width=512)
    assert Validator(model, s).defaults == Defaults(4, 0.0, 512, 256)
    assert Validator(model, Settings()).defaults == model.defaults
