"""NFC input: card UIDs and NDEF text/URI credentials from any frontend nfcpy drives.

nfcpy's `ContactlessFrontend.connect` is blocking, so it runs in a dedicated thread; scans go back
through `emit`, which is thread-safe. One `connect` call is one presentation: nfcpy holds it open
with presence checks until the card or phone is taken away, so a card resting on the reader is
one scan, not one per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import ndef
import structlog

from bridge.config.readers import NfcReaderConfig
from bridge.inputs.base import Emit, InputContext, Scan
from verifier.types import Source

if TYPE_CHECKING:
    import nfc

log = structlog.get_logger()

# nfcpy technology strings: ISO 14443 A, ISO 14443 B, FeliCa at 212/424 kbit/s.

# What a technician should look at when the frontend will not open; said once in every warning.
_CHECKLIST = (
    "check the device path, that the reader is plugged in, that the service user may open it "
    "(plugdev group / udev rule for USB, dialout for tty), that no other program holds it "
    "(e.g. the pn533 kernel module: blacklist it), then run `door-bridge doctor`"
)
# While the frontend stays unavailable or keeps failing, repeat the warning this often (retries in
# between are debug lines).
_REMIND_EVERY_S = 300.0
# Consecutive tag/radio errors after which the frontend itself is suspected and reopened.
_TAG_ERRORS_BEFORE_REOPEN = 3
# A frontend open this long without trouble has recovered: its next failure warns again at once.
_STABLE_AFTER_S = 60.0
# How long cancellation waits for nfcpy to notice `terminate` before giving up on the thread.
_STOP_WAIT_S = 5.0


class SameCardGate:
    """Decides whether a presentation is a new scan, given when each UID was last taken away.

    Kept apart from the nfcpy loop (and given the time explicitly) so the rule is testable on
    its own.
    """

    def __init__(self, gap_s: float) -> None:
        self._gap_s = gap_s
        self._released: dict[bytes, float] = {}

    def is_new(self, uid: bytes, now: float) -> bool:
        released_at = self._released.get(uid)
        return released_at is None or now - released_at >= self._gap_s

    def released(self, uid: bytes, now: float) -> None:
        # One entry per card seen recently; old ones are dropped so memory stays flat.
        self._released = {u: t for u, t in self._released.items() if now - t < self._gap_s}
        self._released[uid] = now


class TroubleLog:
    """Which frontend problems deserve a warning line, so a reader that is unplugged or flapping
    shows in the journal without flooding it.

    An episode of trouble starts with a warning, is reminded of every `remind_every_s`, and ends
    once the frontend has stayed open for `stable_after_s`; "ready" is reported once per warning.
    Times are passed in so the rule is testable on its own.
    """

    def __init__(self, remind_every_s: float, stable_after_s: float) -> None:
        self._remind_every_s = remind_every_s
        self._stable_after_s = stable_after_s
        self._warned_at: float | None = None  # None: no episode of trouble going on
        self._ready_since: float | None = None
        self._ready_reported = False

    def problem(self, now: float) -> bool:
        """Record a failure; True if it should be a warning."""
        if self._ready_since is not None and now - self._ready_since >= self._stable_after_s:
            self._warned_at = None  # it worked for a good while: this is a new episode
        self._ready_since = None
        if self._warned_at is None or now - self._warned_at >= self._remind_every_s:
            self._warned_at = now
            self._ready_reported = False
            return True
        return False

    def ready(self, now: float) -> bool:
        """Record the frontend opening; True if that is news (first time, or after a warning)."""
        self._ready_since = now
        news = not self._ready_reported
        self._ready_reported = True
        return news


def credential_text(records: list[Any]) -> str | None:
    """The first NDEF text or URI record's content: what a phone or credential sticker carries."""
    for record in records:
        if isinstance(record, ndef.TextRecord):
            return str(record.text)
        if isinstance(record, ndef.UriRecord):
            return str(record.iri)
    return None


class NfcInput:
    """One NFC frontend as an `Input`; survives the frontend being absent, unplugged or busy."""

    def __init__(self, cfg: NfcReaderConfig) -> None:
        self.reader_id: str = cfg.id
        self._cfg = cfg

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        worker_ended: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def worker() -> None:
            try:
                self._serve(emit, stop)
            finally:
                with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting
                    loop.call_soon_threadsafe(_resolve, worker_ended)

        # A daemon thread of its own, not the default executor: it lives as long as the daemon,
        # and a frontend stuck in a USB read must not hold up process exit.
        thread = threading.Thread(target=worker, name=f"nfc-{self.reader_id}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(worker_ended)  # ends only when cancelled: _serve runs until stopped
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, _STOP_WAIT_S)
            if thread.is_alive():
                log.warning("nfc_stop_slow", reader=self.reader_id, waited_s=_STOP_WAIT_S)

    # --- worker thread ---------------------------------------------------------------------------

    def _serve(self, emit: Emit, stop: threading.Event) -> None:
        """Open the frontend, read presentations until it fails, wait, reopen; until stopped."""
        # Imported here, in the worker: loading the config (which names this module) stays cheap
        # on a Pi that has no NFC reader configured. (nfc.clf and nfc.tag come with it.)
        import nfc
        cfg = self._cfg
        rlog = log.bind(reader=cfg.id, device=cfg.device)
        gate = SameCardGate(cfg.rescan_gap_s)
        trouble = TroubleLog(_REMIND_EVERY_S, _STABLE_AFTER_S)
        attempts = 0
        while not stop.is_set():
            try:
                clf = nfc.ContactlessFrontend(cfg.device)
            except Exception as error:  # noqa: BLE001 — nfcpy raises OSError, ValueError, usb1 errors, …
                attempts += 1
                say = rlog.warning if trouble.problem(time.monotonic()) else rlog.debug
                say("nfc_frontend_unavailable", error=_describe(error), attempts=attempts,
                         retry_s=cfg.reconnect_s, check=_CHECKLIST)
                stop.wait(cfg.reconnect_s)
                continue
            say = rlog.info if trouble.ready(time.monotonic()) else rlog.debug
            say("nfc_frontend_ready", frontend=str(clf.device), after_attempts=attempts)
            attempts = 0
            try:
                why = self._read_presentations(clf, emit, stop, gate, rlog)
            except Exception as error:  # noqa: BLE001 — our bug or emit failing: keep the reader alive
                rlog.exception("nfc_reader_error", error=_describe(error))
                why = _describe(error)
            finally:
                clf.close()
            if not stop.is_set():
                say = rlog.warning if trouble.problem(time.monotonic()) else rlog.debug
                say("nfc_frontend_lost", error=why, retry_s=cfg.reconnect_s, check=_CHECKLIST)
                stop.wait(cfg.reconnect_s)

    def _read_presentations(self, clf: nfc.ContactlessFrontend, emit: Emit, stop: threading.Event,
                            gate: SameCardGate, rlog: Any) -> str:
        """Loop over presentations on an open frontend; return why it stopped working."""
        import nfc  # already loaded by _serve: a dictionary look-up
        cfg = self._cfg

        counted: set[bytes] = set()  # the tag on the reader now, if it counted (or was a bounce)

        def on_connect(tag: nfc.tag.Tag) -> bool:
            counted.clear()
            if self._on_tag(tag, emit, gate, rlog):
                counted.add(bytes(tag.identifier))
            return True  # nfcpy then waits, with presence checks, until the tag is gone

        def on_release(tag: nfc.tag.Tag) -> bool:
            # A tap that produced nothing (pulled away mid-read) must not hold back the retry.
            if bytes(tag.identifier) in counted:
                gate.released(bytes(tag.identifier), time.monotonic())
            return True

        # `terminate` is polled between sensing rounds and presence checks: waiting on the stop
        # event there paces polling and still wakes the moment `run` is cancelled.
        def terminate() -> bool:
            return stop.wait(cfg.poll_interval_s)

        rdwr = {
            "targets": list(cfg.targets),
            "iterations": 1,
            "on-connect": on_connect,
            "on-release": on_release,
        }
        tag_errors = 0
        while not stop.is_set():
            try:
                result = clf.connect(rdwr=rdwr, terminate=terminate)
            except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as error:
                # A card nfcpy trips over is that card's problem, unless it keeps happening.
                tag_errors += 1
                rlog.warning("nfc_tag_error", error=_describe(error), in_a_row=tag_errors)
                if tag_errors >= _TAG_ERRORS_BEFORE_REOPEN:
                    return f"{tag_errors} tag errors in a row, last {_describe(error)}"
                continue
            except Exception as error:  # noqa: BLE001 — the device vanishing mid-call, or a bug
                return _describe(error)
            if result is False:  # nfcpy swallowed an IOError: the frontend is gone
                return "frontend stopped answering (unplugged or reset)"
            tag_errors = 0
        return "stopped"

    def _on_tag(self, tag: nfc.tag.Tag, emit: Emit, gate: SameCardGate, rlog: Any) -> bool:
        """Emit the scan for this presentation; False if it produced nothing (read incomplete)."""
        import nfc
        uid = bytes(tag.identifier)
        if not gate.is_new(uid, time.monotonic()):
            rlog.debug("nfc_same_card_again", tag_type=str(tag.type))
            return True
        text: str | None = None
        if self._cfg.read_ndef:
            try:
                text = credential_text(tag.ndef.records) if tag.ndef else None
            except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as error:
                # Taken away mid-read: a UID scan now would be the wrong credential for a phone.
                rlog.warning("nfc_read_incomplete", tag_type=str(tag.type), error=_describe(error),
                             advice="hold the card or phone still on the reader")
                return False
            except ndef.DecodeError:
                # Read whole but not valid NDEF: a card with junk in it, counted by its UID. The
                # decoder's message is not logged: it may quote the tag's content.
                rlog.info("nfc_ndef_invalid", tag_type=str(tag.type), using="uid")
        if text is not None:
            scan = Scan(self.reader_id, Source.PHONE_NFC, raw=text.encode("utf-8"), hint=None,
                        at_monotonic=time.monotonic())
            rlog.debug("nfc_scan", source=scan.source.value, tag_type=str(tag.type), ndef_chars=len(text))
        else:
            number = uid.hex().upper()
            scan = Scan(self.reader_id, Source.CARD, raw=number.encode("ascii"), hint="card",
                        at_monotonic=time.monotonic())
            # No fingerprint here: only the decision line carries one (keyed, see verifier.types).
            rlog.debug("nfc_scan", source=scan.source.value, tag_type=str(tag.type), uid_bytes=len(uid))
        emit(scan)
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def create(cfg: NfcReaderConfig, context: InputContext = InputContext()) -> NfcInput:
    return NfcInput(cfg)
