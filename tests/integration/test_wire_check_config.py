"""check-config checks every file the config names with the loaders `run` uses; install.sh stages
the unit's credentials for it and starts the service only when it passes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import ConfigError, from_dict
from tests.support.fakes.frontelio import API_KEY
from tests.support.harness import Site, running
from tests.support.checkout import checkout  # noqa: F401  (fixture)

GOOD_KEY = API_KEY + "\n"


def _key(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _write(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "door.toml"
    config.write_text(f'[bridge]\nstate_dir = "{tmp_path / "state"}"\n[gpio]\npin_factory = "mock"\n' + body)
    return config


def _frontelio(key: Path) -> str:
    return f'[upstream.frontelio]\nbase_url = "http://127.0.0.1:9/api/v1"\napi_key_file = "{key}"\n'


def _check(config: Path, capsys) -> tuple[int, str]:
    code = main(["check-config", str(config)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case, words", [
    ("missing", "API key file not found"),
    ("world_readable", "run: chmod 600"),
    ("empty", "is empty: put the key in it: sudo sh -c 'umask 077; cat > "),
    ("not_mk", "should start with 'mk_'"),
])
def test_frontelio_key_file_problems_exit_2_with_file_key_and_fix(tmp_path, capsys, case, words):
    key = tmp_path / "api-key"
    if case == "world_readable":
        _key(key, GOOD_KEY, 0o644)
    elif case == "empty":
        _key(key, "")
    elif case == "not_mk":
        _key(key, "sk_live_0123456789\n")
    config = _write(tmp_path, _frontelio(key))
    code, err = _check(config, capsys)
    assert code == 2
    assert err.startswith(f"{config}: upstream.frontelio.api_key_file: {key}: "), err
    assert words in err


def test_an_empty_credential_left_by_install_sh_names_the_command_to_fill_it(tmp_path, capsys, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    _key(creds / "api-key", "")  # install.sh creates /etc/door-bridge/api-key empty; systemd copies it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = _write(tmp_path, '[upstream.frontelio]\nbase_url = "http://127.0.0.1:9/api/v1"\napi_key_credential = "api-key"\n')
    code, err = _check(config, capsys)
    assert code == 2
    assert err.startswith(f"{config}: upstream.frontelio.api_key_credential: ")
    assert "sudo sh -c 'umask 077; cat > /etc/door-bridge/api-key'" in err and "systemctl restart door-bridge" in err


def test_every_bad_file_is_reported_at_once(tmp_path, capsys):
    short = _key(tmp_path / "door.secret", "too-short")
    bundle_key = tmp_path / "bundle-key.pem"
    bundle_key.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    central_key = _key(tmp_path / "central.key", "", 0o600)
    body = (f'[cache]\npublic_key_file = "{bundle_key}"\n'
            f'[doors.main]\nrelay_pin = 17\npasscode_secret_file = "{short}"\n'
            f'[upstream.central]\nbase_url = "http://127.0.0.1:9/b"\napi_key_file = "{central_key}"\n'
            f'[upstream.digital_id]\nbase_url = "http://127.0.0.1:9"\napi_key_file = "{tmp_path / "nope.key"}"\n')
    config = _write(tmp_path, body)
    code, err = _check(config, capsys)
    lines = err.strip().splitlines()
    assert code == 2
    keys = [line.split(": ")[1] for line in lines]
    assert keys == ["upstream.digital_id.api_key_file", "upstream.central.api_key_file", "cache.public_key_file",
                    "doors.main.passcode_secret_file"], lines
    assert all(line.startswith(f"{config}: ") for line in lines)
    assert "at least 16 bytes" in lines[3]


async def test_what_check_config_passes_run_accepts_and_what_it_refuses_run_refuses(tmp_path, capsys):
    """The same loaders: a good key passes both; an empty one fails both."""
    key = _key(tmp_path / "api-key", GOOD_KEY)
    body = _frontelio(key)
    config = _write(tmp_path, body)
    assert _check(config, capsys)[0] == 0
    site = Site()
    data = {"bridge": {"state_dir": str(tmp_path / "state")}, "gpio": {"pin_factory": "mock"},
            "cache": {"public_key": site.public_key},
            "upstream": {"frontelio": {"base_url": "http://127.0.0.1:9/api/v1", "api_key_file": str(key)}}}
    async with running(from_dict(data)):
        pass
    _key(key, "")
    assert _check(config, capsys)[0] == 2
    with pytest.raises(ConfigError, match="is empty"):
        async with running(from_dict(data)):
            pass


def test_install_sh_stages_the_unit_credentials_for_check_config(checkout):  # noqa: F811
    done = subprocess.run([str(checkout / "systemd/install.sh"), "--dry-run"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    check = next(line for line in out.splitlines() if " check-config --config" in line)
    assert "CREDENTIALS_DIRECTORY=/run/door-bridge-check-config" in check and check.startswith("+ runuser -u door-bridge")
    assert out.index("install -d -m 0700 -o door-bridge") < out.index(check) < out.index("+ rm -rf /run/door-bridge-check-config")
    assert out.index(check) < out.index("+ systemctl restart door-bridge.service")
    if os.access("/etc/door-bridge/api-key", os.R_OK):
        assert "/etc/door-bridge/api-key /run/door-bridge-check-config/api-key" in out


def test_a_bad_bundle_key_file_gives_check_config_and_the_daemon_the_same_line(tmp_path, capsys):
    """One loader for the bundle key: what check-config prints is what the daemon's loader raises."""
    from bridge.config import load
    from bridge.service.config_files import bundle_public_key

    bundle_key = tmp_path / "bundle-key.pem"
    bundle_key.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    config = _write(tmp_path, f'[cache]\npublic_key_file = "{bundle_key}"\n[doors.main]\nrelay_pin = 17\n')
    code, err = _check(config, capsys)
    with pytest.raises(ConfigError) as daemon_error:
        bundle_public_key(load(config), str(config))
    assert code == 2
    assert err.strip() == str(daemon_error.value)
    assert err.startswith(f"{config}: cache.public_key_file: ")
