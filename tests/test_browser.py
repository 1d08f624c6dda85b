"""GraphiQL and the status board in a real browser: headless Chromium (Debian's `chromium`)
driven by Playwright, with every request that is not to the gateway on loopback aborted.

One browser and one simulator+gateway serve the whole module; each test has its own page.
Screenshots land in `test-artifacts/` (ignored by git).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    Page,
    Request,
    Route,
    WebSocketRoute,
    async_playwright,
    expect,
)
from system_parts import missing

from gateway.app import create_app
from gateway.process.demo import DEMO_SUBSCRIPTION, board_refs, demo_query, demo_refs
from gateway.simulator import Simulator
from gateway.simulator.faults import Fault

from gateway_harness import LOOPBACK_TLS, RunningGateway, run_gateway, serve_app, settings_for

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Generous: waiting for a condition, never asserting how long it took.
PATIENCE_MS = 30_000

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """Before anything starts: without Chromium the module is skipped (failed in CI)."""
    if not shutil.which(CHROMIUM):
        missing(CHROMIUM, "apt-get install chromium")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway() -> AsyncIterator[RunningGateway]:
    simulator = Simulator(seed=7)
    refs = board_refs(simulator.data)
    async with (
        simulator.serve() as running,
        # Legacy polls are driven by the tests (`poll_once`), not by the clock.
        run_gateway(
            running, public=True, webhook_subscribe=True, board_refs=refs, legacy_poll_s=3600
        ) as gateway,
    ):
        yield gateway


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page that may reach 127.0.0.1 only; asserts nothing else was asked for."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    elsewhere: list[str] = []
    failures: list[str] = []

    async def only_loopback(route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            elsewhere.append(request.url)
            await route.abort()

    await context.route("**/*", only_loopback)
    page = await context.new_page()
    page.on("pageerror", lambda error: failures.append(str(error)))
    yield page
    await context.close()
    assert elsewhere == [], f"the page asked for more than the gateway: {elsewhere}"
    assert failures == [], f"uncaught errors in the page: {failures}"


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_graphiql_runs_the_readme_query_offline(gateway: RunningGateway, page: Page) -> None:
    query = demo_query(gateway.sim.data)  # the README's query (tests/test_readme.py checks it)
    await page.goto(f"{gateway.url}/graphql")

    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.insert_text(query)
    typed = await editor.evaluate("(node) => node.CodeMirror.getValue()")
    assert typed == query
    # GraphiQL picks the operation to send from the editor a moment after an edit.
    await page.wait_for_function(
        "() => localStorage.getItem('graphiql:operationName') === 'Demo'", timeout=PATIENCE_MS
    )
    await page.locator(".graphiql-execute-button").click()

    # The result pane is an editor too; its value holds the whole answer.
    answer = await page.wait_for_function(
        """() => {
            const node = document.querySelector('.result-window .CodeMirror');
            const text = node && node.CodeMirror.getValue();
            return text && text.includes('"listings"') ? text : null;
        }""",
        timeout=PATIENCE_MS,
    )
    body = json.loads(await answer.json_value())
    listings = body["data"]["listings"]
    assert len(listings) == len(demo_refs(gateway.sim.data))
    for listing in listings:
        providers = {portal["provider"] for portal in listing["portals"]}
        assert providers == {"CLASSIFIEDS_V3", "LEGACY"}
    await screenshot(page, "graphiql.png")


async def test_board_shows_a_row_per_demo_listing(gateway: RunningGateway, page: Page) -> None:
    refs = demo_refs(gateway.sim.data)
    await page.goto(f"{gateway.url}/board")

    await expect(page.locator("tbody tr[data-ref]")).to_have_count(len(refs))
    for classified_id, _user, _ad in refs:
        row = page.locator(f'tr[data-classified-id="{classified_id}"]')
        for provider in ("CLASSIFIEDS_V3", "LEGACY"):
            chips = row.locator(f'td[data-provider="{provider}"] .chip')
            await expect(chips.first).to_be_visible(timeout=PATIENCE_MS)
        overall = await row.get_attribute("data-state")
        assert overall in {"FAILED", "ONLINE", "PROCESSING", "PENDING", "OFFLINE", "DELETING",
                           "DELETED", "NOT_PUBLISHED"}  # fmt: skip

    counts = await page.locator("#bars .bar-count").all_inner_texts()
    assert sum(int(count) for count in counts) == len(refs)
    await screenshot(page, "board.png")

    # The upstream message shows on keyboard focus, not only on hover.
    chip = page.locator('td[data-provider="CLASSIFIEDS_V3"] .chip').first
    await chip.focus()
    await expect(chip.locator(".tip")).to_be_visible()

    # Filtering by a state leaves only that state's rows.
    await page.locator("#filter").select_option(overall)
    for row in await page.locator("tbody tr[data-ref]").all():
        if await row.is_visible():
            assert await row.get_attribute("data-state") == overall


async def test_board_with_client_tokens(gateway: RunningGateway, page: Page) -> None:
    classified_id, user_id, ad_id = demo_refs(gateway.sim.data)[1]
    sent: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            sent.append(request.headers.get("authorization"))
            if request.url.endswith("/graphql") and request.method == "POST"
            else None
        ),
    )
    refs = board_refs(gateway.sim.data)
    async with run_gateway(gateway.running_sim, client_tokens="s3cret", board_refs=refs) as guarded:
        # No token yet: the board asks for one, then loads with it.
        await page.goto(f"{guarded.url}/board")
        await expect(page.locator("#token-form")).to_be_visible(timeout=PATIENCE_MS)
        await page.locator("#token-input").fill("s3cret")
        await page.locator("#token-input").press("Enter")
        await expect(page.locator("tbody tr[data-ref] .chip").first).to_be_visible(
            timeout=PATIENCE_MS
        )
        await expect(page.locator("#live")).to_have_attribute(
            "data-state", "connected", timeout=PATIENCE_MS
        )

        # A token in the fragment, and listings named in the URL.
        sent.clear()
        ref = f"{classified_id}%2B{user_id}:{ad_id}"
        await page.goto(f"{guarded.url}/board?ref={ref}#token=s3cret")
        await expect(page.locator("tbody tr[data-ref]")).to_have_count(1)
        row = page.locator(f'tr[data-classified-id="{classified_id}"]')
        await expect(row.locator(".chip").first).to_be_visible(timeout=PATIENCE_MS)
        await expect(page.locator("#live")).to_have_attribute(
            "data-state", "connected", timeout=PATIENCE_MS
        )
        # GraphiQL takes the token from the fragment the same way.
        await page.goto(f"{guarded.url}/graphql#token=s3cret")
        editor = page.locator(".graphiql-query-editor .CodeMirror")
        await editor.evaluate("(node) => node.CodeMirror.setValue('query Who { __typename }')")
        await page.wait_for_function(
            "() => localStorage.getItem('graphiql:operationName') === 'Who'",
            timeout=PATIENCE_MS,
        )
        await page.locator(".graphiql-execute-button").click()
        await page.wait_for_function(
            """() => {
                const node = document.querySelector('.result-window .CodeMirror');
                return node && node.CodeMirror.getValue().includes('"Query"');
            }""",
            timeout=PATIENCE_MS,
        )
    assert sent and set(sent) == {"Bearer s3cret"}
    # Memory only: gone from the address bar, never stored.
    assert "s3cret" not in page.url
    stored = await page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert "s3cret" not in stored


def subscribers(gateway: RunningGateway, classified_ids: set[str]) -> set[object]:
    """The board's subscriptions (`listingChanged`) to exactly these classifieds."""
    feed = gateway.app.state.runtime.changes
    return {s for s in feed.subscribers if {ref.classified_id for ref in s.refs} == classified_ids}


def bus_subscribers(gateway: RunningGateway, classified_ids: set[str]) -> set[object]:
    """Subscriptions to `classifiedStatusChanged` of exactly these classifieds."""
    events = gateway.app.state.runtime.events
    return {s for s in events.subscribers if s.classified_ids == classified_ids}


async def subscribed(
    gateway: RunningGateway,
    classified_ids: set[str],
    besides: set[object] = frozenset(),
    *,
    of: Callable[[RunningGateway, set[str]], set[object]] = subscribers,
) -> None:
    """Until the gateway holds a new subscription to exactly these classifieds, and the legacy
    ads it watches have their first snapshot."""
    async with asyncio.timeout(PATIENCE_MS / 1000):
        # No subscription is acknowledged: the gateway's subscriber set is the readiness signal.
        while not of(gateway, classified_ids) - besides:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await gateway.app.state.runtime.poller.baseline()


async def append_status(gateway: RunningGateway, classified_id: str, **item: object) -> None:
    """A new status at the simulated V3, which posts it to the gateway's webhook receiver."""
    url = f"{gateway.running_sim.base_url}/_sim/classifieds/{classified_id}/statuses"
    async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
        response = await client.post(url, json=item)
    assert response.status_code == 200, response.text
    assert all(d["status"] == 201 for d in response.json()["deliveries"]), response.text


async def test_board_updates_a_row_live(gateway: RunningGateway, page: Page) -> None:
    classified_id, user_id, ad_id = demo_refs(gateway.sim.data)[2]
    await page.goto(f"{gateway.url}/board?ref={classified_id}%2B{user_id}:{ad_id}")
    chip = page.locator(f'tr[data-classified-id="{classified_id}"] td[data-portal="SL"] .chip')
    await expect(chip).to_be_visible(timeout=PATIENCE_MS)
    await expect(page.locator("#live")).to_have_attribute(
        "data-state", "connected", timeout=PATIENCE_MS
    )
    await subscribed(gateway, {classified_id})
    await page.evaluate("() => { window.notReloaded = true; }")

    before = await chip.get_attribute("data-state")
    target, status = ("ONLINE", "UPDATED") if before == "FAILED" else ("FAILED", "UPDATING_FAILED")
    await append_status(gateway, classified_id, status=status, portals=["SL"])

    await expect(chip).to_have_attribute("data-state", target, timeout=PATIENCE_MS)
    await expect(page.locator("#announce")).to_contain_text(classified_id)
    assert await page.evaluate("() => window.notReloaded === true")
    await screenshot(page, "board-live.png")


async def test_board_reconnects_after_a_drop(gateway: RunningGateway, page: Page) -> None:
    classified_id, user_id, ad_id = demo_refs(gateway.sim.data)[0]
    sockets: list[WebSocketRoute] = []

    def through(socket: WebSocketRoute) -> None:
        socket.connect_to_server()  # pass every message through to the gateway
        sockets.append(socket)

    await page.route_web_socket(re.compile(r"/graphql$"), through)
    await page.goto(f"{gateway.url}/board?ref={classified_id}%2B{user_id}:{ad_id}")
    live = page.locator("#live")
    await expect(live).to_have_attribute("data-state", "connected", timeout=PATIENCE_MS)
    await subscribed(gateway, {classified_id})
    first = subscribers(gateway, {classified_id})

    # The connection drops as in a gateway restart; the board connects again by itself.
    await sockets[0].close(code=1012, reason="restarting")
    await expect(live).not_to_have_attribute("data-state", "connected", timeout=PATIENCE_MS)
    await expect(live).to_have_attribute("data-state", "connected", timeout=PATIENCE_MS)
    assert len(sockets) == 2
    await subscribed(gateway, {classified_id}, besides=first)

    chip = page.locator(f'tr[data-classified-id="{classified_id}"] td[data-portal="SL"] .chip')
    before = await chip.get_attribute("data-state")
    target, status = ("ONLINE", "UPDATED") if before == "FAILED" else ("FAILED", "UPDATING_FAILED")
    await append_status(gateway, classified_id, status=status, portals=["SL"])
    await expect(chip).to_have_attribute("data-state", target, timeout=PATIENCE_MS)


async def set_legacy_state(gateway: RunningGateway, user_id: int, ad_id: int) -> tuple[str, str]:
    """Move the publish status of the ad's first portal at the simulated legacy API (which has
    no webhooks); answers the portal and the state the board should show."""
    ad = gateway.sim.state.legacy_ad(user_id, ad_id)
    assert ad is not None
    entry = ad["portals"][0]
    state, shown = ("online", "ONLINE") if entry["publish"].get("error") else ("error", "FAILED")
    url = f"{gateway.running_sim.control_url}/legacy/{user_id}/{ad_id}"
    async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
        response = await client.post(url, json={"portal": entry["portal"], "state": state})
    assert response.status_code == 200, response.text
    return entry["portal"].upper(), shown


async def test_board_shows_a_legacy_change_live(gateway: RunningGateway, page: Page) -> None:
    classified_id, user_id, ad_id = demo_refs(gateway.sim.data)[1]
    await page.goto(f"{gateway.url}/board?ref={classified_id}%2B{user_id}:{ad_id}")
    row = page.locator(f'tr[data-classified-id="{classified_id}"]')
    await expect(row.locator('td[data-provider="LEGACY"] .chip').first).to_be_visible(
        timeout=PATIENCE_MS
    )
    await expect(page.locator("#live")).to_have_attribute(
        "data-state", "connected", timeout=PATIENCE_MS
    )
    await subscribed(gateway, {classified_id})
    await page.evaluate("() => { window.notReloaded = true; }")

    portal, shown = await set_legacy_state(gateway, user_id, ad_id)
    await gateway.app.state.runtime.poller.poll_once()  # the next poll finds it

    await expect(row.locator(f'td[data-portal="{portal}"] .chip')).to_have_attribute(
        "data-state", shown, timeout=PATIENCE_MS
    )
    await expect(page.locator("#announce")).to_contain_text(classified_id)
    assert await page.evaluate("() => window.notReloaded === true")
    await screenshot(page, "board-legacy-live.png")


async def test_board_resumes_after_a_reconnect_with_what_it_missed(
    gateway: RunningGateway, page: Page
) -> None:
    classified_id, user_id, ad_id = demo_refs(gateway.sim.data)[2]
    sockets: list[WebSocketRoute] = []
    dropping = asyncio.Event()  # set: the gateway's events do not reach the page
    dropped: list[str | bytes] = []

    def through(socket: WebSocketRoute) -> None:
        server = socket.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if dropping.is_set() and "listingChanged" in str(message):
                dropped.append(message)  # lost, as on a connection about to fail
            else:
                socket.send(message)

        server.on_message(from_server)
        sockets.append(socket)

    await page.route_web_socket(re.compile(r"/graphql$"), through)
    board_queries: list[str] = []
    page.on(
        "request",
        lambda request: (
            board_queries.append(request.url)
            if request.method == "POST" and "query Board" in (request.post_data or "")
            else None
        ),
    )
    await page.goto(f"{gateway.url}/board?ref={classified_id}%2B{user_id}:{ad_id}")
    live = page.locator("#live")
    await expect(live).to_have_attribute("data-state", "connected", timeout=PATIENCE_MS)
    await subscribed(gateway, {classified_id})

    # A first change reaches the board: it now holds a cursor.
    sl = page.locator(f'tr[data-classified-id="{classified_id}"] td[data-portal="SL"] .chip')
    before = await sl.get_attribute("data-state")
    target, status = ("ONLINE", "UPDATED") if before == "FAILED" else ("FAILED", "UPDATING_FAILED")
    await append_status(gateway, classified_id, status=status, portals=["SL"])
    await expect(sl).to_have_attribute("data-state", target, timeout=PATIENCE_MS)
    await expect(live).to_have_attribute("data-cursor", re.compile(".+"))
    queries = len(board_queries)

    # The next change is lost on the way, then the connection drops.
    dropping.set()
    portal, shown = await set_legacy_state(gateway, user_id, ad_id)
    await gateway.app.state.runtime.poller.poll_once()
    async with asyncio.timeout(PATIENCE_MS / 1000):
        while not dropped:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    dropping.clear()
    await sockets[0].close(code=1012, reason="restarting")

    # Back, the board resumes after its cursor: the gateway replays the lost change.
    chip = page.locator(
        f'tr[data-classified-id="{classified_id}"] td[data-portal="{portal}"] .chip'
    )
    await expect(chip).to_have_attribute("data-state", shown, timeout=PATIENCE_MS)
    await expect(live).to_have_attribute("data-state", "connected", timeout=PATIENCE_MS)
    assert len(sockets) == 2
    assert len(board_queries) == queries  # replayed, not read anew
    assert gateway.app.state.runtime.changes.stats.replayed >= 1


async def test_graphiql_runs_a_subscription(gateway: RunningGateway, page: Page) -> None:
    classified_id = demo_refs(gateway.sim.data)[0][0]
    document = (
        f'subscription Watch {{ classifiedStatusChanged(classifiedIds: ["{classified_id}"]) '
        "{ classifiedId status { status } } }"
    )
    await page.goto(f"{gateway.url}/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await editor.evaluate("(node, text) => node.CodeMirror.setValue(text)", document)
    await page.wait_for_function(
        "() => localStorage.getItem('graphiql:operationName') === 'Watch'", timeout=PATIENCE_MS
    )
    await page.locator(".graphiql-execute-button").click()
    await subscribed(gateway, {classified_id}, of=bus_subscribers)

    await append_status(gateway, classified_id, status="UPDATING")
    answer = await page.wait_for_function(
        """() => {
            const node = document.querySelector('.result-window .CodeMirror');
            const text = node && node.CodeMirror.getValue();
            return text && text.includes('classifiedStatusChanged') ? text : null;
        }""",
        timeout=PATIENCE_MS,
    )
    event = json.loads(await answer.json_value())["data"]["classifiedStatusChanged"]
    assert event == {"classifiedId": classified_id, "status": {"status": "UPDATING"}}


async def editor_text(page: Page, selector: str, expected: str) -> str:
    """The text of a GraphiQL editor once it holds `expected`."""
    found = await page.wait_for_function(
        """([selector, expected]) => {
            const node = document.querySelector(selector);
            const text = node && node.CodeMirror.getValue();
            return text && text.includes(expected) ? text : null;
        }""",
        arg=[selector, expected],
        timeout=PATIENCE_MS,
    )
    text: str = await found.json_value()
    return text


async def test_graphiql_opens_ready_to_run_the_demo_query_and_a_live_tab(
    gateway: RunningGateway, page: Page
) -> None:
    """A first visit: the demo's query with the configured refs as its variables, so Run
    answers at once; the second tab holds the demo's live subscription, which runs too."""
    await page.goto(f"{gateway.url}/graphql")
    query = await editor_text(page, ".graphiql-query-editor .CodeMirror", "query Demo(")
    assert "listings(refs: $refs)" in query
    variables = json.loads(await editor_text(page, ".graphiql-editor-tool .CodeMirror", '"refs"'))
    refs = demo_refs(gateway.sim.data)
    assert variables == {
        "refs": [
            {"classifiedId": cid, "legacy": {"userId": user, "adId": ad}} for cid, user, ad in refs
        ]
    }
    await page.locator(".graphiql-execute-button").click()
    body = json.loads(await editor_text(page, ".result-window .CodeMirror", '"listings"'))
    assert "errors" not in body
    assert [listing["state"] for listing in body["data"]["listings"]] != []
    assert len(body["data"]["listings"]) == len(refs)
    await screenshot(page, "graphiql-demo.png")

    tabs = page.locator(".graphiql-tab")
    await expect(tabs).to_have_count(2)
    await tabs.nth(1).locator(".graphiql-tab-button").click()
    live = await editor_text(page, ".graphiql-query-editor .CodeMirror", "subscription Live")
    assert live == DEMO_SUBSCRIPTION
    # GraphiQL picks the operation to send from the editor a moment after the tab changes.
    await page.wait_for_function(
        "() => localStorage.getItem('graphiql:operationName') === 'Live'", timeout=PATIENCE_MS
    )
    events = gateway.app.state.runtime.events
    before = set(events.subscribers)
    await page.locator(".graphiql-execute-button").click()
    async with asyncio.timeout(PATIENCE_MS / 1000):
        await events.membership.until(lambda: bool(set(events.subscribers) - before))
    classified_id = refs[0][0]
    await append_status(gateway, classified_id, status="UPDATING")
    event = json.loads(
        await editor_text(page, ".result-window .CodeMirror", "classifiedStatusChanged")
    )["data"]["classifiedStatusChanged"]
    assert event["classifiedId"] == classified_id
    assert event["status"]["status"] == "UPDATING"


async def test_board_shows_which_upstream_failed(gateway: RunningGateway, page: Page) -> None:
    gateway.sim.state.add_fault_object(Fault(upstream="legacy", kind="error", status=503))
    # The answers earlier tests kept would show for the cache's TTL before the fault does.
    gateway.app.state.runtime.service.legacy.clear()
    try:
        await page.goto(f"{gateway.url}/board")
        rows = page.locator("tbody tr[data-ref]")
        await expect(rows).to_have_count(len(demo_refs(gateway.sim.data)))
        first = rows.first
        await expect(first.locator(".errors")).to_contain_text(
            "legacy unavailable", timeout=PATIENCE_MS
        )
        await expect(first.locator(".errors")).to_contain_text("UPSTREAM_UNAVAILABLE")
        # The other provider's chips still show; the failed one's cells say so.
        await expect(
            first.locator('td[data-provider="CLASSIFIEDS_V3"] .chip').first
        ).to_be_visible()
        legacy_cells = first.locator('td[data-provider="LEGACY"] .chip')
        await expect(legacy_cells.first).to_have_attribute("data-state", "UNAVAILABLE")
        await screenshot(page, "board-legacy-down.png")
    finally:
        gateway.sim.state.clear_faults()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_board_marks_stale_answers(gateway: RunningGateway, page: Page) -> None:
    # A gateway of its own, on an injected clock: its V3 pages age without sleeping.
    clock = FakeClock()
    running = gateway.running_sim
    settings = settings_for(
        running, cache_ttl_s=30, cache_stale_s=600, board_refs=board_refs(running.sim.data)
    )
    async with serve_app(create_app(settings, clock=clock)) as url:
        await page.goto(f"{url}/board")
        chips = page.locator('tbody td[data-provider="CLASSIFIEDS_V3"] .chip')
        await expect(chips.first).to_be_visible(timeout=PATIENCE_MS)
        await expect(page.locator("[data-stale]")).to_have_count(0)

        running.sim.state.add_fault("v3", "malformed")  # not retried: each read fails at once
        try:
            clock.now += 330  # past the TTL, within the stale window
            await page.locator("#reload").click()
            stale = page.locator("[data-stale]")
            await expect(stale).to_have_count(len(demo_refs(running.sim.data)), timeout=PATIENCE_MS)
            await expect(stale.first).to_have_text("⏱ stale answer (5 min old)")
            await expect(chips.first).to_be_visible()
        finally:
            running.sim.state.clear_faults()
