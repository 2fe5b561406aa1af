"""Config models for `[offline]`: the learned offline cache and the hand-back of offline decisions.

The trade-off is the site's to make and is spelt out in docs/upstreams.md: a GRANT learned from
the central keeps opening during an outage until the earliest of the credential's own expiry, its
window and `max_age_s` — so a grant revoked centrally while the WAN is down still opens until
then. `learn = false` is for sites that want SNA's "no local verification" literally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from bridge.config.base import FilePath, StrictModel

# A few hours: long enough to ride out a typical ISP outage, short enough that a revocation the
# door could not hear about stops opening the same shift.
DEFAULT_MAX_AGE_S = 4 * 3600.0

Age = Annotated[float, Field(gt=0, le=30 * 86_400)]
CredentialName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@-]+$")]


class OfflineUpstream(StrictModel):
    """Per-upstream overrides (`[offline.frontelio]`, `[offline.sna]`); unset = the `[offline]` value."""

    learn: bool | None = None
    max_age_s: Age | None = None
    # Credentials with no expiry of their own (cards): how long one online GRANT may be replayed.
    card_ttl_s: Age | None = None


class WebhookSection(StrictModel):
    """Frontelio integration webhook (`POST /access/webhooks/:integrationId`) for offline decisions."""

    integration_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    # The integration's webhook secret: a 0600 file, or a systemd credential (LoadCredential=).
    secret_file: FilePath | None = None
    secret_credential: CredentialName | None = None
    # Default: the `[upstream.frontelio]` base_url.
    base_url: str | None = None
    # How often an idle hand-back looks for new offline decisions.
    idle_s: Annotated[float, Field(gt=0, le=300)] = 2.0

    @model_validator(mode="after")
    def _one_secret(self) -> "WebhookSection":
        if (self.secret_file is None) == (self.secret_credential is None):
            raise ValueError("set exactly one of secret_file or secret_credential (the integration's webhook secret)")
        return self


class OfflineSection(StrictModel):
    learn: bool = True
    max_age_s: Age = DEFAULT_MAX_AGE_S
    card_ttl_s: Age | None = None  # None: max_age_s
    # Bounded in number (least recently used go first); about 300 bytes on disk each.
    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    # The per-bridge secret that keys look-ups and seals entries. Default: `learned.key` in the
    # state dir, created 0600 on first start. A systemd credential (LoadCredentialEncrypted=)
    # keeps it off the SD card's plain files.
    key_file: FilePath | None = None
    key_credential: CredentialName | None = None
    frontelio: OfflineUpstream = OfflineUpstream()
    sna: OfflineUpstream = OfflineUpstream()
    webhook: WebhookSection | None = None

    @model_validator(mode="after")
    def _one_key(self) -> "OfflineSection":
        if self.key_file is not None and self.key_credential is not None:
            raise ValueError("set key_file or key_credential, not both")
        return self

    def for_upstream(self, name: str) -> "UpstreamOffline":
        """The effective settings for one upstream; Digital ID (and anything else) never learns."""
        table = {"frontelio": self.frontelio, "sna": self.sna}.get(name)
        if table is None:
            return UpstreamOffline(False, self.max_age_s, None)
        learn = self.learn if table.learn is None else table.learn
        max_age = table.max_age_s if table.max_age_s is not None else self.max_age_s
        ttl = table.card_ttl_s if table.card_ttl_s is not None else self.card_ttl_s
        return UpstreamOffline(learn, max_age, ttl)


@dataclass(frozen=True, slots=True)
class UpstreamOffline:
    learn: bool
    max_age_s: float
    card_ttl_s: float | None
