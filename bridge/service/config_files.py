"""Every file the configuration names, checked with the loaders `run` uses.

`check-config` and `run` both call `check_files`, and the daemon loads the same files with the
same functions (`load_api_key`, `load_passcode_secret`, `bundle_public_key`, `load_signing_key`),
so a file check-config passes is a file `run` accepts. All problems are reported at once, one
line each: `FILE: key.path: problem`, exit 2.

Files named by a systemd credential (`…_credential`, `LoadCredential=`) are read from
`$CREDENTIALS_DIRECTORY`, as the service sees them; outside the service that variable is unset
and the check says so (systemd/install.sh stages the unit's credentials for check-config).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bridge.config import Config, ConfigError
from bridge.config.secret_files import FRONTELIO_PREFIX, ApiKeyError, load_api_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MIN_PASSCODE_SECRET_BYTES = 16


def load_passcode_secret(path: Path) -> bytes:
    """A door's offline-passcode secret (docs/offline-passcodes.md): 0600, at least 16 bytes."""
    secret = load_api_key(key_file=path).reveal().encode()
    if len(secret) < MIN_PASSCODE_SECRET_BYTES:
        raise ApiKeyError(f"{path}: the secret must be at least {MIN_PASSCODE_SECRET_BYTES} bytes "
                          "(make one: head -c32 /dev/urandom | xxd -p -c64)")
    return secret


def check_files(config: Config, source: str, *, credentials_dir: str | None = None) -> None:
    """Raise one ConfigError listing every named file that `run` would refuse."""
    problems: list[str] = []
    for key, check in _checks(config, source, credentials_dir):
        try:
            check()
        except ConfigError as e:
            problems.append(str(e))
        except (ApiKeyError, ValueError, OSError) as e:
            problems.append(f"{source}: {key}: {_text(e)}")
    if problems:
        raise ConfigError("\n".join(problems))


def bundle_public_key(config: Config, source: str | None = None, *, needed: str = "to accept bundles") -> Ed25519PublicKey:
    """The central's Ed25519 bundle key the config names (`cache.public_key` or `_file`): the one
    loader for the daemon (sync, grants, a rotated key on reload) and `grants import`.
    `source` names the file in the message, when the caller knows it."""
    from verifier.bundle import load_public_key

    prefix = f"{source}: " if source else ""
    key = "cache.public_key_file" if config.cache.public_key_file is not None else "cache.public_key"
    text = config.cache.public_key_text(source or "<config>")
    if text is None:
        raise ConfigError(f"{prefix}cache.public_key: required {needed} (the central's Ed25519 public key)")
    try:
        return load_public_key(text)
    except ValueError as e:
        raise ConfigError(f"{prefix}{key}: {e}") from None


def _text(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename or ''}: {e.strerror}".lstrip(": ")
    return str(e)


def _checks(config: Config, source: str, credentials_dir: str | None) -> list[tuple[str, Callable[[], object]]]:
    from verifier.bundle import load_signing_key

    checks: list[tuple[str, Callable[[], object]]] = []

    def keyed(table: str, key_file: Path | None, credential: str | None, prefix: str | None = None) -> None:
        if key_file is None and credential is None:
            return
        name = f"{table}.api_key_file" if key_file is not None else f"{table}.api_key_credential"
        checks.append((name, lambda: load_api_key(key_file=key_file, credential=credential, prefix=prefix,
                                                  credentials_dir=credentials_dir)))

    up = config.upstream
    if up.frontelio is not None:
        keyed("upstream.frontelio", up.frontelio.api_key_file, up.frontelio.api_key_credential, FRONTELIO_PREFIX)
    if up.digital_id is not None:
        keyed("upstream.digital_id", up.digital_id.api_key_file, up.digital_id.api_key_credential)
    if up.central is not None:
        keyed("upstream.central", up.central.api_key_file, up.central.api_key_credential)
    sna = up.sna
    if sna is not None and (getattr(sna, "api_key_file", None) or getattr(sna, "api_key_credential", None)):
        keyed("upstream.sna", getattr(sna, "api_key_file", None), getattr(sna, "api_key_credential", None))
    if up.http.ca_bundle is not None:
        bundle = up.http.ca_bundle
        checks.append(("upstream.http.ca_bundle", lambda: _ca_bundle(bundle)))
    if config.cache.public_key is not None or config.cache.public_key_file is not None:
        key = "cache.public_key_file" if config.cache.public_key_file else "cache.public_key"
        checks.append((key, lambda: bundle_public_key(config, source)))  # the daemon's own loader
    if config.cache.signing_key_file is not None:
        signing = config.cache.signing_key_file
        checks.append(("cache.signing_key_file", lambda: load_signing_key(Path(signing))))
    for name, door in config.doors.items():
        if door.passcode_secret_file is not None:
            secret = door.passcode_secret_file
            checks.append((f"doors.{name}.passcode_secret_file", lambda secret=secret: load_passcode_secret(secret)))
    offline = config.offline
    if offline.key_file is not None or offline.key_credential is not None:
        kf, kc = offline.key_file, offline.key_credential
        checks.append(("offline.key_file" if kf else "offline.key_credential",
                       lambda: load_api_key(key_file=kf, credential=kc, credentials_dir=credentials_dir)))
    if offline.webhook is not None:
        hook = offline.webhook
        checks.append(("offline.webhook.secret_file" if hook.secret_file else "offline.webhook.secret_credential",
                       lambda: load_api_key(key_file=hook.secret_file, credential=hook.secret_credential,
                                            credentials_dir=credentials_dir)))
    return checks


def _ca_bundle(path: Path) -> None:
    """What `build_client` does with it: a CA file ssl can load."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except ssl.SSLError as e:
        raise ValueError(f"{path}: not a PEM CA bundle ({e.reason or e})") from None
