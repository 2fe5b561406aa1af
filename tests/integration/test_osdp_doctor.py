"""`door-bridge doctor` on a configured OSDP bus, against libosdp's own PeripheralDevices in a
second process on the other end of a real pty (tests/support/osdp_pd_emulator.py): a PD with the right
key, one with another key, one in clear text only, one factory-fresh (install mode pending), and
an address nobody answers.
"""

from __future__ import annotations

import io
from pathlib import Path

from bridge.cli.doctor import run
from tests.support.harness import wait_for
from tests.support.osdp_rig import bus  # noqa: F401  (the pty fixture: the daemon's end by path, the emulator's by fd)
from tests.support.osdp_rig import (
    KEY,
    OTHER_KEY,
    READER,
    config,
    daemon_on,
    emulated,
    key_file,
    online,
)


def write_config(tmp_path: Path, port: str, pds: list[tuple[int, str, bool]]) -> str:
    """pds: (address, key file name, install)."""
    body = (f'[bridge]\nstate_dir = "{tmp_path / "state"}"\n[gpio]\npin_factory = "mock"\n'
            "[doors.main]\nrelay_pin = 17\n")
    for n, (address, key_name, install) in enumerate(pds, 1):
        body += (f'[[readers]]\ntype = "osdp"\nid = "OSDP-{n}"\nport = "{port}"\naddress = {address}\n'
                 f'scbk_file = "{tmp_path / key_name}"\n' + ("install = true\n" if install else ""))
    path = tmp_path / "door.toml"
    path.write_text(body)
    return str(path)


def osdp_lines(text: str, port: str) -> list[str]:
    section = text.split(f"== OSDP bus {port} ==\n", 1)[1].split("\n\n", 1)[0]
    return section.splitlines()


def doctor(path: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run(path, out)
    return code, out.getvalue()


def test_doctor_lists_the_pds_on_an_osdp_bus_and_what_to_check_for_one_that_does_not_answer(
        tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    for address in (101, 102, 103, 104):
        key_file(tmp_path, f"pd{address}.key", KEY)
    path = write_config(tmp_path, port, [(101, "pd101.key", False), (102, "pd102.key", False),
                                         (103, "pd103.key", False), (104, "pd104.key", False),
                                         (105, "pd105.key", True)])
    with emulated(master, f"101:{KEY}", f"102:{OTHER_KEY}", f"103:{KEY}:clear", "105:none") as pd:
        code, text = doctor(path)
    head, ok_pd, wrong_key, clear, silent, fresh = osdp_lines(text, port)
    assert head == f"ok    {port} at 115200 baud: 4 of 5 configured PD(s) answered"
    assert ok_pd.startswith("ok    reader OSDP-1 at address 101: Secure Channel (AES-128) up with the key in ")
    # The emulator's PDs: vendor 00A0B1, model 7, version 2, serial 0x1234 + address, firmware 1.2.3.
    assert "vendor 00A0B1, model 7, version 2, serial 00001299, firmware 010203" in ok_pd
    assert "capabilities led, buzzer, card_format" in ok_pd
    assert wrong_key.startswith("fail  reader OSDP-2 at address 102: Secure Channel refused")
    assert str(tmp_path / "pd102.key") in wrong_key and "serial 0000129A" in wrong_key
    assert clear.startswith("fail  reader OSDP-3 at address 103: the PD answers only in clear text")
    assert "Secure Channel: not offered by the PD" in clear
    assert silent.startswith("fail  reader OSDP-4 at address 104: the PD does not answer;")
    assert "A/B swapped" in silent and "termination" in silent and "address and baud rate" in silent
    assert "vendor" not in silent  # nothing is made up for a PD that sent nothing
    assert fresh.startswith("warn  reader OSDP-5 at address 105: no key yet (install = true)")
    assert "Secure Channel: not tried" in fresh and "serial 0000129D" in fresh
    assert code == 1
    # The doctor changes no PD: the factory-fresh one got no key (no osdp_KEYSET), nobody a command.
    assert [line for line in pd.lines if "command" in line] == []
    assert not (tmp_path / "pd105.key").exists() and not (tmp_path / "pd105.key.new").exists()
    assert KEY.lower() not in text.lower() and OTHER_KEY.lower() not in text.lower()


async def test_doctor_leaves_a_bus_held_by_the_running_daemon_alone(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    path = write_config(tmp_path, port, [(101, "pd101.key", False)])
    with emulated(master, f"101:{KEY}"):
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            code, text = doctor(path)
            (held,) = osdp_lines(text, port)
            assert held.startswith(f"warn  {port}: held by another process (the running daemon?), so not asked")
            assert "door-bridge status" in held
            assert online(daemon) and daemon.parts.reader_feedback[READER].bus.channel.broken is None
    assert code == 0
