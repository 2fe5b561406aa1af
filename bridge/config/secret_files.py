"""API keys: loaded from a 0600 key file or a systemd credential, never from config text.

The key lives in an `ApiKey` whose repr and str are redacted, so an f-string, a traceback's
locals or a structlog key=value line shows `ApiKey(<redacted>)`, never the secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FRONTELIO_PREFIX = "mk_"


class ApiKeyError(Exception):
    """A key the operator must fix; the message names the path and the fix, never the key."""


class ApiKey:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret, for an HTTP header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("ApiKey cannot be pickled")


def load_api_key(
    *,
    key_file: Path | None = None,
    credential: str | None = None,
    prefix: str | None = None,
    credentials_dir: str | None = None,
) -> ApiKey:
    """Read the key from `key_file`, or from `$CREDENTIALS_DIRECTORY/<credential>`.

    A key file must not be readable by group or others: a door's API key opens every door of the
    tenant. Systemd credentials are exempt from the mode check: systemd puts them in a directory
    only the service can read.
    """
    if (key_file is None) == (credential is None):
        raise ApiKeyError("give exactly one of api_key_file or api_key_credential")
    if credential is not None:
        directory = credentials_dir if credentials_dir is not None else os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ApiKeyError(
                f"api_key_credential {credential!r}: $CREDENTIALS_DIRECTORY is not set; "
                f"add LoadCredential={credential}:/path/to/key to the service unit (or use api_key_file)"
            )
        if "/" in credential or credential in (".", ".."):
            raise ApiKeyError(f"api_key_credential {credential!r}: not a credential name")
        path = Path(directory) / credential
        check_mode = False
    else:
        assert key_file is not None
        path = Path(key_file)
        check_mode = True
    try:
        return ApiKey(_read_key(path, check_mode=check_mode, prefix=prefix))
    except _EmptyKey:
        if credential is not None:
            # systemd copies the file named by the unit's LoadCredential= line; install.sh makes
            # /etc/door-bridge/api-key empty so that a fresh unit can start at all.
            raise ApiKeyError(
                f"api_key_credential {credential!r}: the credential is empty: put the key in the file the unit's "
                f"LoadCredential={credential}:… line names (systemd/install.sh: /etc/door-bridge/{credential}): "
                f"sudo sh -c 'umask 077; cat > /etc/door-bridge/{credential}' (paste the key, Enter, Ctrl-D), "
                "then: sudo systemctl restart door-bridge"
            ) from None
        raise ApiKeyError(
            f"{path}: API key file is empty: put the key in it: sudo sh -c 'umask 077; cat > {path}' "
            "(paste the key, Enter, Ctrl-D)"
        ) from None


class _EmptyKey(Exception):
    """An existing, readable, empty key file: the message depends on where it came from."""


def _read_key(path: Path, *, check_mode: bool, prefix: str | None) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ApiKeyError(f"{path}: API key file not found") from None
    except OSError as e:
        raise ApiKeyError(f"{path}: cannot read API key file: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ApiKeyError(f"{path}: API key file is not a regular file")
    if check_mode and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ApiKeyError(
            f"{path}: API key file is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ApiKeyError(f"{path}: cannot read API key file: {e.strerror}") from None
    try:
        value = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ApiKeyError(f"{path}: API key file is not ASCII text") from None
    if not value:
        raise _EmptyKey()
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise ApiKeyError(f"{path}: API key file holds more than one word or control characters; put only the key in it")
    if prefix and not value.startswith(prefix):
        raise ApiKeyError(f"{path}: not a Frontelio API key (it should start with {prefix!r}); mint one at /access/api-keys")
    return value
