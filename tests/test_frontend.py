"""The browser pages as HTTP serves them: GraphiQL and the board, every asset from the gateway."""

from __future__ import annotations

import hashlib
import re

from starlette.routing import Mount

from gateway.http.pages import MIN_COMPRESSED_BYTES, STATIC_DIR, VENDOR, CompressedStatic
from gateway.process.demo import board_refs
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

VENDOR_DIR = STATIC_DIR / "vendor"
ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def assets_of(page: str) -> list[str]:
    return [url for url in ASSET.findall(page) if not url.startswith("data:")]


async def test_graphiql_page_loads_every_asset_from_the_gateway(gateway: RunningGateway) -> None:
    page = await gateway.client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = assets_of(page.text)
    assert len(assets) >= 7
    for url in assets:
        assert url.startswith("/static/"), url
        response = await gateway.client.get(url)
        assert response.status_code == 200, url
        if "/vendor/" in url:
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        else:
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["etag"]


async def test_board_page_and_its_modules_are_served(simulator: RunningSimulator) -> None:
    refs = board_refs(simulator.sim.data)
    async with run_gateway(simulator, board_refs=refs) as gateway:
        page = await gateway.client.get("/board")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # The configured listings are the board's default (HTML-escaped in a meta tag).
        assert 'name="board-default-refs"' in page.text
        for ref in refs:
            assert ref in page.text
        assets = [(url, await gateway.client.get(url)) for url in assets_of(page.text)]
    for url, response in assets:
        assert response.status_code == 200, url
    modules = re.findall(r'from "\./([\w-]+\.js)"', (STATIC_DIR / "app" / "board.js").read_text())
    assert {"board-view.js", "graphql.js", "refs.js", "token.js"} <= set(modules)


def static_app(gateway: RunningGateway) -> CompressedStatic:
    [mount] = [r for r in gateway.app.routes if isinstance(r, Mount) and r.name == "static"]
    assert isinstance(mount.app, CompressedStatic)
    return mount.app


async def test_revalidation_and_compression_of_static_files(gateway: RunningGateway) -> None:
    url = f"/static/vendor/{VENDOR['graphiql']}/graphiql.min.js"
    on_disk = (VENDOR_DIR / VENDOR["graphiql"] / "graphiql.min.js").read_bytes()
    gzip_ok = {"Accept-Encoding": "gzip"}
    first, second = [await gateway.client.get(url, headers=gzip_ok) for _ in range(2)]
    for response in (first, second):
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.content == on_disk  # httpx has decoded it
        assert response.num_bytes_downloaded < len(on_disk) / 3
    assert static_app(gateway).compressions == 1, "compressed once, then served from memory"
    assert first.headers["etag"].startswith('W/"')
    again = await gateway.client.get(
        url, headers={"If-None-Match": first.headers["etag"], **gzip_ok}
    )
    assert again.status_code == 304
    plain = await gateway.client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert int(plain.headers["content-length"]) == len(on_disk)
    part = await gateway.client.get(url, headers={"Range": "bytes=0-99", **gzip_ok})
    assert (part.status_code, part.content) == (206, on_disk[:100])
    assert (await gateway.client.get("/static/vendor/nothing@1.0.0/x.js")).status_code == 404


async def test_small_static_files_are_sent_as_they_are(gateway: RunningGateway) -> None:
    small = (STATIC_DIR / "app" / "token.js").read_bytes()
    assert len(small) < MIN_COMPRESSED_BYTES
    response = await gateway.client.get("/static/app/token.js", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert response.content == small


def test_vendored_files_match_their_recorded_checksums() -> None:
    sums = (VENDOR_DIR / "SHA256SUMS").read_text().splitlines()
    recorded = {line.split()[1]: line.split()[0] for line in sums}
    for folder in VENDOR.values():
        assert (VENDOR_DIR / folder).is_dir(), folder
        assert any(p.name.startswith("LICENSE") for p in (VENDOR_DIR / folder).iterdir()), folder
        readme = (VENDOR_DIR / "README.md").read_text()
        assert folder in readme, f"{folder} is not described in the vendor README"
    for relative, digest in recorded.items():
        assert hashlib.sha256((VENDOR_DIR / relative).read_bytes()).hexdigest() == digest
    on_disk = {
        str(path.relative_to(VENDOR_DIR)) for path in VENDOR_DIR.glob("*/*") if path.is_file()
    }
    assert on_disk == set(recorded)
