"""The simulator's generated catalog: deterministic, realistic, and full of documented quirks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gateway.simulator as simulator_package
from gateway.simulator import Simulator
from gateway.simulator.data import generate
from gateway.simulator.lifecycle import LEGACY_STATES, legacy_state_of
from gateway.simulator.vocabulary import (
    CLASSIFIED_STATUSES,
    LEGACY_FEATURES,
    LEGACY_NO_DATE,
    MEDIA_PORTALS,
    MEDIA_STATUSES,
    PORTALS,
)

RFC3339_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEGACY_DATE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def test_same_seed_gives_same_catalog_and_other_seeds_differ() -> None:
    fresh = generate.__wrapped__
    first, again, other = fresh(7), fresh(7), fresh(8)
    assert first.tenants == again.tenants
    assert first.legacy_ads == again.legacy_ads
    assert [s.item for s in first.classifieds[first.multi_page[0]].statuses] == [
        s.item for s in again.classifieds[again.multi_page[0]].statuses
    ]
    assert first.tenants["agency-1"] != other.tenants["agency-1"]


def test_catalog_has_tenants_long_and_empty_histories_and_listings() -> None:
    data = Simulator(seed=7).data
    assert list(data.tenants) == ["agency-1", "agency-2", "agency-3"]
    assert all(len(ids) == 40 for ids in data.tenants.values())
    assert len(data.multi_page) == 6 and len(data.empty) == 6
    for classified_id in data.multi_page:
        assert 150 <= len(data.classifieds[classified_id].statuses) <= 250
    for classified_id in data.empty:
        assert data.classifieds[classified_id].statuses == []
        assert data.media_of(classified_id) == []
    assert len(data.listings) == 30
    assert len({listing.classified_id for listing in data.listings}) == 30
    assert len({(listing.user_id, listing.ad_id) for listing in data.listings}) == 30
    for classified_id, user_id, ad_id in data.listings:
        assert classified_id in data.classifieds
        assert ad_id in data.legacy_users[user_id]


def test_classified_items_follow_the_documented_schema() -> None:
    data = Simulator(seed=7).data
    changed_portals = typo = details = 0
    for record in data.classifieds.values():
        previous: list[str] | None = None
        for entry in record.statuses:
            item = entry.item
            assert item["status"] in CLASSIFIED_STATUSES
            assert RFC3339_MS_Z.match(item["statusDate"])
            assert isinstance(item["message"], str) and item["message"]
            portals = item["portals"]
            assert portals and len(portals) <= 5 and len(set(portals)) == len(portals)
            assert set(portals) <= set(PORTALS)
            if item["status"].startswith("RECEIV"):
                assert item["subStatus"].startswith(item["status"] + "_") or (
                    item["subStatus"] == "RECEIVING_PATCH" and item["status"] == "RECEIVED"
                )
            else:
                assert "subStatus" not in item
            typo += item.get("subStatus") == "RECEIVING_PATCH" and item["status"] == "RECEIVED"
            details += "subStatusDetails" in item
            changed_portals += previous is not None and previous != portals
            previous = portals
    assert typo and details and changed_portals


def test_every_third_classified_carries_the_internal_variant_fields() -> None:
    data = Simulator(seed=7).data
    ids = data.tenants["agency-1"]
    internal = data.classifieds[ids[0]].statuses[0].item
    documented = data.classifieds[ids[1]].statuses[0].item
    assert {"statusId", "classifiedId", "customerId", "creationDate", "revision"} <= set(internal)
    assert internal["classifiedId"] == ids[0] and internal["revision"] >= 1
    assert not {"statusId", "classifiedId", "customerId", "revision"} & set(documented)


def test_lifecycles_include_creation_updates_failures_and_deletions() -> None:
    data = Simulator(seed=7).data
    seen = {e.item["status"] for r in data.classifieds.values() for e in r.statuses}
    assert {"RECEIVING", "RECEIVED", "CREATING", "CREATED", "UPDATING", "UPDATED"} <= seen
    assert {"DELETING", "DELETED"} <= seen
    assert any(status.endswith("_FAILED") for status in seen)


def test_media_items_carry_a_single_media_portal() -> None:
    data = Simulator(seed=7).data
    items = [
        e.item for r in data.classifieds.values() for history in r.media.values() for e in history
    ]
    assert items
    assert all(item["portal"] in MEDIA_PORTALS for item in items)
    assert all(item["status"] in MEDIA_STATUSES for item in items)
    assert all(RFC3339_MS_Z.match(item["statusDate"]) for item in items)
    assert any(item.get("subStatus") == "DOWNLOADED_001" for item in items)
    assert all(len(r.media) <= 3 for r in data.classifieds.values())


def test_legacy_ads_cover_every_publish_state_and_the_quirks() -> None:
    data = Simulator(seed=7).data
    assert 12311 in data.legacy_users and len(data.legacy_users) == 5
    assert all(10 <= len(ads) <= 60 for ads in data.legacy_users.values())
    first_ads = data.legacy_users[12311][: len(LEGACY_STATES)]
    for ad_id, state in zip(first_ads, LEGACY_STATES, strict=True):
        marktplaats = data.legacy_ads[12311][ad_id]["portals"][0]
        assert marktplaats["portal"] == "marktplaats"
        assert legacy_state_of(marktplaats["publish"]) == state
    assert data.string_ad_ids and data.false_remote_ids
    for user_id, ad_id in data.string_ad_ids:
        assert data.legacy_ads[user_id][ad_id]["adId"] == str(ad_id)
    remote_ids = [
        p["publish"]["remoteAdId"]
        for ads in data.legacy_ads.values()
        for ad in ads.values()
        for p in ad["portals"]
    ]
    assert any(r is False for r in remote_ids)
    assert any(type(r) is int and r == 0 for r in remote_ids)
    assert any(type(r) is int and r > 0 for r in remote_ids)


def test_legacy_portal_objects_follow_the_vendor_example() -> None:
    data = Simulator(seed=7).data
    portals = [p for ads in data.legacy_ads.values() for ad in ads.values() for p in ad["portals"]]
    assert {p["portal"] for p in portals} == {"marktplaats", "tweedehands", "website"}
    for portal in portals:
        publish = portal["publish"]
        for key in ("pendingDate", "processingDate", "startDate", "closeDate"):
            if key in publish:
                assert publish[key] == LEGACY_NO_DATE or LEGACY_DATE.match(publish[key])
        if portal["portal"] == "website":
            assert portal["features"] is False
        else:
            for feature in portal["features"]:
                assert feature["feature"] in LEGACY_FEATURES
                assert {"processing", "processingDate"} <= set(feature)
    assert any(p["portal"] == "website" and "closeDate" not in p["publish"] for p in portals)
    assert any(f["active"] for p in portals if p["features"] for f in p["features"])
    assert any(f["pending"] for p in portals if p["features"] for f in p["features"])


async def test_state_changes_leave_the_catalog_untouched() -> None:
    sim = Simulator(seed=7)
    classified_id = sim.data.empty[0]
    await sim.state.append_status(classified_id, {"status": "RECEIVING"})
    sim.state.put_legacy_ad(12311, 1, [])
    assert sim.data.classifieds[classified_id].statuses == []
    assert 1 not in sim.data.legacy_ads[12311]
    assert Simulator(seed=7).state.classified(classified_id).statuses == []  # type: ignore[union-attr]


def test_the_simulator_imports_nothing_from_the_rest_of_the_gateway() -> None:
    """It is written from docs/upstreams.md, so a client's misreading cannot hide in it."""
    package = Path(simulator_package.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
                assert node.level <= 1, module.name
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("gateway") or name.startswith("gateway.simulator")
