"""A faithful simulator of the two upstream APIs (AVIV Classifieds V3 and the legacy
GoedGeplaatst status API), served over real HTTP for the demo and the tests.

Written from `docs/upstreams.md` only: nothing here imports from the rest of the gateway, so a
misreading of an API in the gateway's clients cannot hide behind the same misreading here.

    from gateway.simulator import Simulator
    sim = Simulator(seed=7)
    async with sim.serve() as running:
        running.v3_url, running.token_url, running.legacy_url
"""

from __future__ import annotations

from .app import RunningSimulator, Simulator
from .data import Catalog, Listing
from .faults import Fault, FaultKind
from .state import DeliveryResult, RecordedRequest, State
from .vocabulary import (
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    SIM_LEGACY_API_KEY,
    SIM_SANDBOX_AUDIENCE,
)

__all__ = [
    "SIM_AUDIENCE",
    "SIM_CLIENT_ID",
    "SIM_CLIENT_SECRET",
    "SIM_LEGACY_API_KEY",
    "SIM_SANDBOX_AUDIENCE",
    "Catalog",
    "DeliveryResult",
    "Fault",
    "FaultKind",
    "Listing",
    "RecordedRequest",
    "RunningSimulator",
    "Simulator",
    "State",
]
