"""Collections page with ?limit=&marker= (a Link header to the next page) and filter by common fields."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kumo import client as client_module
from kumo.client import Client


def walk(api: TestClient, url: str) -> list[list[str]]:
    """Follow Link: rel="next" headers; the ids of each page."""
    pages = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.text
        pages.append([o["id"] for o in response.json()])
        link = response.headers.get("link")
        url = link.split(">")[0].lstrip("<") if link else ""
    return pages


def test_pages_follow_the_link_header_and_cover_the_collection_once(api: TestClient) -> None:
    bridge = api.post("/v1/bridges", json={"name": "b"}).json()
    other = api.post("/v1/bridges", json={"name": "o"}).json()
    ids = sorted(api.post("/v1/ports", json={"device_id": bridge["id"]}).json()["id"] for _ in range(7))
    api.post("/v1/ports", json={"device_id": other["id"], "name": "x"})
    pages = walk(api, f"/v1/ports?limit=3&device_id={bridge['id']}")
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == ids
    # Without limit the collection is one bare array, as the contract says.
    assert len(api.get("/v1/ports").json()) == 8
    assert [p["name"] for p in api.get("/v1/ports?name=x").json()] == ["x"]
    assert [b["name"] for b in api.get("/v1/bridges?name=o").json()] == ["o"]
    # Nested collections page too, and keep their parent as a filter.
    chain = api.post("/v1/chains", json={}).json()
    for _ in range(4):
        api.post(f"/v1/chains/{chain['id']}/rules", json={"type": "accept"})
    assert [len(p) for p in walk(api, f"/v1/chains/{chain['id']}/rules?limit=3")] == [3, 1]


def test_bad_page_queries_say_how_to_fix_them(api: TestClient) -> None:
    for query, field in (("limit=0", "limit"), ("limit=abc", "limit"), ("limit=5000", "limit"), ("marker=x", "marker")):
        response = api.get(f"/v1/ports?{query}")
        assert response.status_code == 422, query
        assert response.json()["message"].startswith(f"{field}:"), response.json()
    response = api.get("/v1/ports?devce_id=x")
    assert response.status_code == 422
    assert "devce_id: unknown query parameter" in response.json()["message"]
    assert "device_id" in response.json()["message"]


def test_the_client_pages_through_a_collection_and_filters_on_the_server(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)
    client = Client("http://testserver")
    client.http = api  # the API in this process
    bridge = client.bridges.create(name="b")
    made = sorted(client.ports.create(device_id=bridge["id"], name=f"p{n}")["id"] for n in range(5))
    client.ports.create(device_id=client.bridges.create()["id"], name="elsewhere")
    assert [p["id"] for p in client.ports.list(device_id=bridge["id"])] == made
    assert [p["name"] for p in client.ports.list(name="elsewhere")] == ["elsewhere"]
    chain = client.chains.create()
    rules = [client.rules.create(chain_id=chain["id"], type="accept", position=1)["id"] for _ in range(5)]
    # pages come in id order; the client gives a chain's rules back in their order
    assert [r["id"] for r in client.rules.list(chain_id=chain["id"])] == rules[::-1]
