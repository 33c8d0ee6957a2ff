"""Collections page with ?limit=&marker= (a Link header to the next page) and filter by common fields."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
    assert sum(pages, []) == ids
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
