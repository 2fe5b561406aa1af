"""What a SIGHUP reload may change at once, and what waits for a restart: a pure function.

`plan_reload(old, new)` takes the configuration the daemon runs and the one just read, and says
which sections need a restart, which doors only changed their pulse length, whether the replay
window or rate limits changed (their memory then starts afresh), and the configuration the daemon
runs afterwards. That last one keeps what needs a restart as it runs now, so `status` tells the
truth about the running door rather than about the file.

Kept apart from the daemon so each rule has its own test without a running service.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import Config, DoorSection, PolicySection
from bridge.config.offline import OfflineSection

# Sections a running daemon cannot swap: they own hardware, connections or files.
RESTART_SECTIONS = ("readers", "upstream", "gpio", "audit", "site", "emergency")
# [offline] keys that need a restart (the key and bound of the store, the webhook's connection);
# its limits (learn, max_age_s, card_ttl_s) apply at once.
OFFLINE_RESTART_KEYS = ("key_file", "key_credential", "max_entries", "webhook")
# [policy] keys whose memory (recent scans, recent denials) is sized by them.
GUARD_KEYS = ("replay_window_s", "rate_limit_denies", "rate_limit_window_s", "rate_limit_cooldown_s")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    restart: tuple[str, ...]
    """Sections (`doors.NAME` for one door) whose change waits for a restart."""
    pulses: dict[str, DoorSection]
    """Doors whose only change is `pulse_s`: their new section, applied at once."""
    guards_changed: bool
    """The replay window or the rate limits changed: the replay memory and limiter start afresh."""
    offline: OfflineSection
    """The [offline] section to apply now: new limits, the running key, bound and webhook."""
    running: Config
    """The configuration the daemon runs after the reload."""


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    restart = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
    if old.bridge.state_dir != new.bridge.state_dir or old.bridge.id != new.bridge.id:
        restart.append("bridge")
    pulses: dict[str, DoorSection] = {}
    for name in sorted(set(old.doors) | set(new.doors)):
        before, after = old.doors.get(name), new.doors.get(name)
        if before is None or after is None or before.model_copy(update={"pulse_s": after.pulse_s}) != after:
            restart.append(f"doors.{name}")
        elif before.pulse_s != after.pulse_s:
            pulses[name] = after
    if any(getattr(old.offline, k) != getattr(new.offline, k) for k in OFFLINE_RESTART_KEYS):
        restart.append("offline")
    offline = new.offline.model_copy(update={k: getattr(old.offline, k) for k in OFFLINE_RESTART_KEYS})
    kept: dict[str, object] = {k: getattr(old, k) for k in RESTART_SECTIONS}
    kept["doors"] = {name: pulses.get(name, section) for name, section in old.doors.items()}
    kept["bridge"] = new.bridge.model_copy(update={"state_dir": old.bridge.state_dir, "id": old.bridge.id})
    kept["offline"] = offline
    return ReloadPlan(restart=tuple(restart), pulses=pulses, guards_changed=_guards(old.policy) != _guards(new.policy),
                      offline=offline, running=new.model_copy(update=kept))


def _guards(policy: PolicySection) -> tuple[float, ...]:
    return tuple(getattr(policy, k) for k in GUARD_KEYS)
