"""Configuration errors name the file, the key and the problem, and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def test_example_config_is_valid_via_the_real_command():
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "check-config", str(EXAMPLE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


@pytest.mark.parametrize(
    "body, key, words",
    [
        ('[doors.main]\nrelay_pin = "17"\n', "doors.main.relay_pin", "valid integer"),
        ("[doors.main]\nrelay_pin = 17\npulse_secs = 3\n", "doors.main.pulse_secs", "unknown key"),
        ("[bridge]\nmode = \"sometimes\"\n", "bridge.mode", "local-first"),
        ("[doors.main]\nrelay_pin = 99\n", "doors.main.relay_pin", "less than or equal"),
        ('[[readers]]\ntype = "console"\nid = "R1"\ndoor = "back"\n', "readers.0.door", "no door 'back'"),
        ("[policy]\nreplay_window_s = -1\n", "policy.replay_window_s", "greater than or equal"),
        ("[doors.main]\n", "doors.main.relay_pin", "required"),
        ('[cache]\npublic_key = "not a key"\n', "cache.public_key", "Ed25519"),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(tmp_path, capsys, body, key, words):
    path = tmp_path / "door.toml"
    path.write_text(body)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and key in err and words in err, err


def test_not_toml_and_missing_file(tmp_path, capsys):
    path = tmp_path / "door.toml"
    path.write_text("[bridge\nid=")
    assert main(["check-config", str(path)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_duplicate_reader_ids_are_refused(tmp_path):
    path = tmp_path / "door.toml"
    path.write_text('[doors.main]\nrelay_pin = 17\n[[readers]]\ntype = "console"\nid = "R1"\n'
                    '[[readers]]\ntype = "console"\nid = "R1"\n')
    with pytest.raises(ConfigError, match=r"readers\.1\.id: duplicate reader id 'R1'"):
        load(path)


def test_run_with_bad_config_exits_2(tmp_path):
    path = tmp_path / "door.toml"
    path.write_text("[bridge]\nid = 5\n")
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "bridge.id" in proc.stderr


def test_every_commented_setting_in_the_example_is_a_real_key(tmp_path, capsys):
    """Uncomment everything: the only complaints may be the documented either/or pairs."""
    import re

    out = []
    for line in EXAMPLE.read_text().splitlines():
        m = re.match(r"^# (\[\[?[a-z_.]+\]\]?|[a-z_0-9]+ = .*)$", line)
        out.append(m.group(1) if m else line)
    path = tmp_path / "all.toml"
    path.write_text("\n".join(out) + "\n")
    assert main(["check-config", str(path)]) == 2
    errors = sorted(capsys.readouterr().err.strip().splitlines())
    assert errors == [f"{path}: cache: set public_key or public_key_file, not both",
                      f"{path}: offline: set key_file or key_credential, not both",
                      f"{path}: upstream.frontelio: set api_key_file or api_key_credential, not both"]


def test_gpio_chip_needs_the_lgpio_factory() -> None:
    from bridge.config import ConfigError, from_dict

    assert from_dict({"gpio": {"pin_factory": "lgpio", "chip": 3}}).gpio.chip == 3
    with pytest.raises(ConfigError, match=r"<config>: gpio: chip needs pin_factory = \"lgpio\""):
        from_dict({"gpio": {"pin_factory": "mock", "chip": 3}})
