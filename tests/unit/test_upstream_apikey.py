"""API keys come from a 0600 file or a systemd credential, and never show themselves."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from bridge.config.secret_files import FRONTELIO_PREFIX, ApiKey, ApiKeyError, load_api_key

KEY = "mk_Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV6cXV1eg"


def write_key(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    key = load_api_key(key_file=write_key(tmp_path / "k", f"  {KEY}\n"), prefix=FRONTELIO_PREFIX)
    assert key.reveal() == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = write_key(tmp_path / "frontelio.key", KEY, mode)
    with pytest.raises(ApiKeyError) as caught:
        load_api_key(key_file=path)
    message = str(caught.value)
    assert str(path) in message and f"chmod 600 {path}" in message and f"{mode:04o}" in message
    assert KEY not in message


def test_systemd_credential_is_read_from_the_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "frontelio-key").write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_api_key(credential="frontelio-key", prefix=FRONTELIO_PREFIX).reveal() == KEY


def test_missing_credentials_directory_says_to_add_load_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ApiKeyError, match="LoadCredential=frontelio-key:"):
        load_api_key(credential="frontelio-key")


def test_credential_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="not a credential name"):
        load_api_key(credential="../etc/passwd", credentials_dir=str(tmp_path))


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("  \n", "empty"),
        ("sk_live_abcdef", "should start with 'mk_'"),
        (f"{KEY}\n{KEY}\n", "more than one word"),
        ("mk_caf\u00e9", "not ASCII"),
    ],
)
def test_bad_key_files_get_a_clear_answer_without_the_content(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ApiKeyError, match=problem) as caught:
        load_api_key(key_file=write_key(tmp_path / "k", text), prefix=FRONTELIO_PREFIX)
    if text.strip():
        assert text.strip().splitlines()[0] not in str(caught.value)


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="not found") as caught:
        load_api_key(key_file=tmp_path / "nope.key")
    assert str(tmp_path / "nope.key") in str(caught.value)


def test_exactly_one_source_is_required(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="exactly one"):
        load_api_key()
    with pytest.raises(ApiKeyError, match="exactly one"):
        load_api_key(key_file=tmp_path / "k", credential="k")


def test_key_is_redacted_in_repr_str_format_logs_and_refuses_pickling() -> None:
    key = ApiKey(KEY)
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    try:
        with capture_logs() as logs:
            structlog.get_logger().info("loaded", key=key, nested={"k": key})
    finally:
        structlog.reset_defaults()
    for text in (repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr(logs)):
        assert KEY not in text and "redacted" in text
    with pytest.raises(TypeError):
        pickle.dumps(key)

