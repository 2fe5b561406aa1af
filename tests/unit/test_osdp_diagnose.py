"""What the journal blames when a PD does not come online (bridge.inputs.osdp_logic.diagnose)."""

from __future__ import annotations

from bridge.inputs.osdp_logic import REPLY_CCRYPT, REPLY_PDCAP, REPLY_PDID, PdReplies, diagnose


def test_a_failed_handshake_is_blamed_on_the_key_only_if_the_key_has_not_just_worked() -> None:
    seen = PdReplies({REPLY_PDID, REPLY_PDCAP, REPLY_CCRYPT})
    fresh = diagnose(seen, True, install_mode=False, key_source="/etc/door-bridge/pd.key")
    assert fresh.kind == "wrong_key" and "/etc/door-bridge/pd.key" in fresh.text
    after = diagnose(seen, True, install_mode=False, key_source="/etc/door-bridge/pd.key", key_worked=True)
    assert after.kind == "handshake_failed" and "RS-485" in after.check and "/etc/door-bridge/pd.key" in after.check
    silent = diagnose(PdReplies(set()), None, install_mode=False, key_source="/k", key_worked=True)
    assert silent.kind == "no_answer"
