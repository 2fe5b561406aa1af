"""A series of power cuts of the guest: the boots' records (`Run`), the cuts themselves, each cut's
audit as the next boot found it (acknowledged decisions, duplicates, the relay line at power-on), and
the figures bench/guest.py prints. Shared by tests/system/test_guest.py and bench/guest.py.
"""

from __future__ import annotations

import collections
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tests.system import image as image_mod
from tests.system.qemu import Boot


@dataclass
class Run:
    build_s: float = 0.0
    rootfs_built_s: float | None = None
    main: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[Boot] = field(default_factory=list)
    final: list[dict[str, Any]] = field(default_factory=list)
    boot_s: list[float] = field(default_factory=list)  # host seconds from QEMU start to the scenario's first line
    main_s: float = 0.0

    def check(self, name: str) -> dict[str, Any]:
        found = [m for m in self.main + self.final if m.get("kind") == "check" and m.get("name") == name]
        assert found, f"the guest never reported {name!r}: {[m.get('name') for m in self.main if m.get('kind') == 'check']}"
        return found[-1]


def power_cut_series(scenario: Callable[..., Boot], cuts: int, rng: random.Random, first: int = 0) -> list[Boot]:
    """Boots of `cut`, each SIGKILLed after a random number (3-15) of acknowledged decisions."""
    done = []
    for k in range(first, first + cuts):
        boot = scenario("cut", 600, boot=str(k))
        boot.wait_for(lambda m: m.get("kind") == "scanning", timeout=300)
        wanted = rng.randint(3, 15)
        boot.wait_for(lambda m, n=wanted, b=boot: sum(x.get("kind") == "ack" for x in b.messages) >= n, timeout=180)
        time.sleep(rng.uniform(0, 1.0))
        boot.power_cut()
        done.append(boot)
    return done


@dataclass
class CutAudit:
    """One power cut, as the next boot found it: what the guest had acknowledged, what survived."""

    boot: int
    acked: int  # decision lines the guest saw in the journal before QEMU was killed (each after its commit)
    found: int  # of those, the ones in audit.db at the next boot
    lost: list[str]  # fingerprints acknowledged but missing
    audit_rows: int
    duplicate_ids: int  # in audit.db
    central_events: int
    central_stored_twice: int
    central_unknown: int  # events the central holds that audit.db never had
    boot_to_scenario_s: float | None  # host seconds from QEMU start to the scenario's first line (None: read back from logs)
    boot_to_ready_s: float | None  # ... to door-bridge active
    guest_uptime_at_ready_s: float
    relay_at_power_on: int | None  # the sim line's value when the scenario started (1 = released, active-low)
    relay_before_ready: dict[str, Any]  # the kernel trace of the relay line from power-on to READY


def audit_power_cuts(run: Run) -> tuple[list[CutAudit], list[str]]:
    """Each cut against the audit of the boot after it (the next cut's, or `final`'s)."""
    afters = [b.messages for b in run.cuts[1:]] + [run.final]
    audits, problems = [], []
    for k, (boot, after) in enumerate(zip(run.cuts, afters)):
        audit = next(m for m in after if m.get("kind") == "audit")
        ready = next(m for m in after if m.get("kind") == "ready")
        power_on = next((m for m in after if m.get("kind") == "power_on"), {})
        scenario = next(m for m in after if m.get("kind") == "scenario")
        acked = collections.Counter(m["cred"] for m in boot.messages if m.get("kind") == "ack")
        committed = collections.Counter(row[3] for row in audit["rows"] if row[2] == "VERIFY")
        lost = acked - committed
        ids = [row[1] for row in audit["rows"]]
        central = audit["central"]
        c = CutAudit(boot=k, acked=sum(acked.values()), found=sum((acked & committed).values()), lost=sorted(lost),
                     audit_rows=len(ids), duplicate_ids=len(ids) - len(set(ids)), central_events=len(central["ids"]),
                     central_stored_twice=len(central["stored_twice"]) + len(central["ids"]) - len(set(central["ids"])),
                     central_unknown=len(set(central["ids"]) - set(ids)), boot_to_scenario_s=scenario.get("t_host"),
                     boot_to_ready_s=ready.get("t_host"), guest_uptime_at_ready_s=float(ready.get("uptime", 0)),
                     relay_at_power_on=power_on.get("relay_value"), relay_before_ready=ready["relay"])
        audits.append(c)
        if lost:
            problems.append(f"cut {k}: {sum(lost.values())} acknowledged decisions missing from audit.db: {list(lost)[:5]}")
        if c.duplicate_ids:
            problems.append(f"after cut {k}: duplicate event ids in audit.db")
        if c.central_stored_twice:
            problems.append(f"after cut {k}: the central stored an event twice: {central['stored_twice'][:5]}")
        if c.central_unknown:
            problems.append(f"after cut {k}: the central holds events audit.db never had")
    readies = [(k, next(m for m in b.messages if m.get("kind") == "ready")) for k, b in enumerate(run.cuts)]
    readies.append((len(run.cuts), next(m for m in run.final if m.get("kind") == "ready")))
    for k, ready in readies:
        if ready["relay"]["first_set"] not in (None, 1) or ready["relay"]["pulses"] or ready["relay"]["active_now"]:
            problems.append(f"boot {k}: relay line not inactive from power-on to READY: {ready['relay']}")
    for k, b in enumerate(run.cuts):
        power_on = next((m for m in b.messages if m.get("kind") == "power_on"), None)
        if power_on is None or power_on["relay_value"] != 1:
            problems.append(f"boot {k}: relay line not released at power-on: {power_on}")
    return audits, problems


def power_cut_figures(run: Run, audits: list[CutAudit], problems: list[str]) -> dict[str, Any]:
    """What bench/guest.py prints (DOOR_BRIDGE_GUEST_FIGURES names the file)."""
    def spread(values: list[float | None]) -> dict[str, float]:
        ordered = sorted(v for v in values if v is not None)
        return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]} if ordered else {}

    last = next(m for m in run.final if m.get("kind") == "audit")["rows"]
    checks = [m for m in run.main + run.final if m.get("kind") == "check"]
    security = next((m for m in checks if m.get("name") == "security_score"), {})
    return {
        "bench": "guest", "arch": image_mod.guest_arch().name, "cuts": len(audits),
        "parts_ready_s": run.build_s, "rootfs_built_s": run.rootfs_built_s, "main_scenario_s": run.main_s,
        "boot_to_scenario_s": spread(run.boot_s),
        "boot_to_ready_s": spread([a.boot_to_ready_s for a in audits]),
        "guest_uptime_at_ready_s": spread([a.guest_uptime_at_ready_s for a in audits]),
        "acked_total": sum(a.acked for a in audits), "found_total": sum(a.found for a in audits),
        "lost_total": sum(len(a.lost) for a in audits),
        "acked_per_cut": spread([float(a.acked) for a in audits]),
        "central_duplicates": sum(a.central_stored_twice for a in audits),
        "audit_duplicate_ids": sum(a.duplicate_ids for a in audits),
        "verify_rows_after_last_boot": sum(1 for row in last if row[2] == "VERIFY"),
        "central_events_after_last_boot": audits[-1].central_events if audits else None,
        "boot_reasons_after_last_boot": dict(collections.Counter(str(row[6]) for row in last if row[2] == "BOOT")),
        "relay_released_at_every_power_on": all(a.relay_at_power_on == 1 for a in audits),
        "relay_never_driven_active_before_ready": all(not a.relay_before_ready["pulses"] and not a.relay_before_ready["active_now"]
                                                      and a.relay_before_ready["first_set"] in (None, 1) for a in audits),
        "security_score": security.get("score"),
        "guest_checks": len(checks), "guest_checks_failed": [m.get("name") for m in checks if not m.get("ok")],
        "problems": problems,
        "per_cut": [asdict(a) for a in audits],
    }
