"""Security headers on every response (issue 17): HSTS, no framing, no referrer, a
Content-Security-Policy allowing nothing on API responses and only the docs' own assets on the
offline Swagger UI (`src/product_shop/web/middleware.py`, `src/product_shop/web/docs.py`)."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi.testclient import TestClient

from tests.conftest import World

COMMON = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def test_every_api_response_carries_the_security_headers(client: TestClient, world: World) -> None:
    responses = [
        client.get("/healthz"),
        client.get("/openapi.json"),
        client.get("/v1/me/orders", headers=world.patient_a.headers),  # 200
        client.get("/v1/me/orders"),  # 401
        client.get("/v1/nothing-here"),  # 404
        client.post("/v1/webhooks/payments", json={"n": "4111111111111111"}),  # 422 card data
    ]
    for response in responses:
        for name, value in COMMON.items():
            assert response.headers[name] == value, (response.url, name)
        assert response.headers["content-security-policy"] == API_CSP, response.url
        assert "camera=()" in response.headers["permissions-policy"]


def test_the_docs_page_may_load_only_its_own_assets_and_inline_script(
    client: TestClient,
) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self' 'sha256-" in policy
    assert "connect-src 'self'" in policy
    # the page's inline script is the one the policy allows, by hash
    for script in re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    # every asset the page names is served from this origin, with the same policy
    for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', page.text):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-security-policy"] == policy
        for name, value in COMMON.items():
            assert response.headers[name] == value
