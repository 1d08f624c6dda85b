"""The upstream APIs' fixed vocabulary, transcribed from docs/upstreams.md and the vendors' docs.

Enumerations, vendor messages, the User-Agent pattern and the simulator's credentials. This
module is written from the documentation only and imports nothing from the gateway: a
misreading of an API in the gateway's clients must not be mirrored here.
"""

from __future__ import annotations

import re
from typing import Final, Literal

SIM_CLIENT_ID: Final = "sim-client"
SIM_CLIENT_SECRET: Final = "sim-secret"
SIM_AUDIENCE: Final = "https://api.aviv-group.com/caas/v3"
SIM_SANDBOX_AUDIENCE: Final = "https://api.aviv-group.com/sandbox/caas/v3"
SIM_LEGACY_API_KEY: Final = "sim-legacy-key"
AUDIENCES: Final = frozenset({SIM_AUDIENCE, SIM_SANDBOX_AUDIENCE})
TOKEN_LIFETIME_S: Final = 86_400

# Three `name/version` tokens separated by single spaces (docs/upstreams.md).
USER_AGENT_PATTERN: Final = re.compile(
    r"^[^\/\s]+\/[^\/\s]+\s{1}[^\/\s]+\/[^\/\s]+\s{1}[^\/\s]+\/[^\/\s]+$"
)

Upstream = Literal["v3", "legacy", "token"]
UPSTREAMS: Final[tuple[Upstream, ...]] = ("v3", "legacy", "token")
ENDPOINTS: Final[dict[Upstream, tuple[str, ...]]] = {
    "token": ("token",),
    "v3": ("classified_statuses", "media_statuses", "webhooks_put", "webhooks_delete"),
    "legacy": ("status_get", "status_post", "status_totals"),
}

PORTALS: Final = ("SL", "BU", "COM", "BD", "LR", "LI", "SLC", "SLN")
MEDIA_PORTALS: Final = ("SL", "BU", "COM", "BD", "LR", "LI")

CLASSIFIED_STATUSES: Final = (
    "RECEIVING",
    "RECEIVED",
    "RECEIVING_FAILED",
    "CREATING",
    "CREATED",
    "CREATING_FAILED",
    "UPDATING",
    "UPDATED",
    "UPDATING_FAILED",
    "DELETING",
    "DELETED",
    "DELETING_FAILED",
)
VERBS: Final = ("POST", "PUT", "PATCH", "DELETE")

MEDIA_STATUSES: Final = (
    "RECEIVED",
    "DOWNLOADING",
    "DOWNLOADING_FAILED",
    "DOWNLOADED",
    "AV_SCANNING",
    "AV_SCANNED",
    "AV_CLEANED",
    "AV_QUARANTINED",
    "DELETING",
    "DELETED",
)

# Vendor wording from the seed's status table, keyed by (status, verb or None).
_RECEIVE_TEXT: Final = {
    "POST": "classified",
    "PUT": "classified update",
    "PATCH": "classified partial update",
    "DELETE": "classified deletion",
}
_FAILED_TEXT: Final = (
    "An error occurred while processing your classified. The classified has not been "
    "transmitted to the next steps. Please contact our technical support manager."
)
_PLAIN_MESSAGES: Final = {
    "CREATING": "The classified is beeing created in our system.",
    "CREATED": "The classified has successfully been created in our system.",
    "CREATING_FAILED": "An error occurred while creating the classified in our system.",
    "UPDATING": "The classified is beeing updated in our system.",
    "UPDATED": "The classified has successfully been updated in our system.",
    "UPDATING_FAILED": "An error occurred while updating the classified in our system.",
    "DELETING": "The classified is beeing deleted in our system.",
    "DELETED": "The classified has successfully been deleted in our system.",
    "DELETING_FAILED": "An error occurred while deleting the classified in our system.",
}

MEDIA_MESSAGES: Final = {
    "RECEIVED": "The media URL has been received successfully. The processing will begin shortly.",
    "DOWNLOADING": "The file has started to be downloaded in our system.",
    "DOWNLOADING_FAILED": (
        "An error occurred while downloading the file: https://my.mediaserver.com/photos/1234.jpg."
        " The file has not been downloaded. Please make sure the submitted URL is accessible"
        " and re-submit it again."
    ),
    "DOWNLOADED": "The media has been successfully downloaded in our system",
    "AV_SCANNING": "The antivirus scan is starting.",
    "AV_SCANNED": "Virus scan finished",
    "AV_CLEANED": "The file has been scanned. It is free from virus.",
    "AV_QUARANTINED": "The file has been scanned. It contains a virus. It will been quarantined.",
    "DELETING": (
        "The media deletion has successfully been received in our system. The deletion request"
        " has been transmitted to the next steps."
    ),
    "DELETED": "The media has been deleted.",
}

LEGACY_PORTALS: Final = ("marktplaats", "tweedehands", "website")
LEGACY_FEATURES: Final = (
    "omhoogplaatsen",
    "dagtopper",
    "dagtopper3",
    "dagtopper7",
    "homepaginaAdvertentie",
    "url",
)
LEGACY_NO_DATE: Final = "0000-00-00 00:00:00"
LEGACY_MAX_ITEMS_PER_PAGE: Final = 1000


def sub_status_for(status: str, verb: str) -> str | None:
    """The subStatus that pairs with `status` for a write `verb`, or None if it takes none."""
    if status in ("RECEIVING", "RECEIVED", "RECEIVING_FAILED"):
        return f"{status}_{verb}"
    return None


def classified_message(status: str, verb: str | None) -> str:
    """The vendor's message for a classified status (free text; clients must not parse it)."""
    if status in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[status]
    what = _RECEIVE_TEXT.get(verb or "POST", "classified")
    if status == "RECEIVING":
        return f"The {what} has successfully been received in our system."
    if status == "RECEIVED":
        return f"The {what} has successfully been transmitted to the next steps."
    return _FAILED_TEXT
