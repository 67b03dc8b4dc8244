"""`product-shop serve` over TLS (issue 17, spec §16 Security: TLS in transit): with
`--ssl-certfile/--ssl-keyfile` every worker answers HTTPS, and production refuses to start on
plain HTTP without a trusted TLS-terminating proxy (`src/product_shop/serve.py`,
`src/product_shop/config.py`)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx

from product_shop.simulators.server import free_port
from tests.e2e.test_serve import PYTHON, START_TIMEOUT, _serving, _until, env  # noqa: F401
from tests.tls_support import self_signed


def _answers_https(url: str, context: ssl.SSLContext) -> bool:
    try:
        return httpx.get(url, timeout=1, verify=context).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_with_a_certificate_answers_over_https_from_every_worker(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    files = self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=str(files.certfile))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    arguments = ["--port", str(port), "--workers", "2"]
    arguments += ["--ssl-certfile", str(files.certfile), "--ssl-keyfile", str(files.keyfile)]
    with _serving(env, tmp_path / "serve.log", *arguments) as server:
        _until(lambda: _answers_https(f"{url}/readyz", trusting), START_TIMEOUT, "ready")
        for _ in range(10):  # new connections each: both workers' sockets answer TLS
            response = httpx.get(f"{url}/healthz", verify=trusting, timeout=5)
            assert response.status_code == 200
            assert response.headers["strict-transport-security"].startswith("max-age=63072000")
        try:  # plain HTTP to the TLS port gets no answer
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
        except httpx.TransportError:
            plain = None
        assert plain != 200
        assert server.poll() is None


def test_production_refuses_to_serve_plain_http_without_a_trusted_proxy(
    env: dict[str, str],  # noqa: F811
) -> None:
    production = {**env, "PRODUCT_SHOP_ENVIRONMENT": "production"}
    result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [*PYTHON, "serve", "--port", str(free_port())],
        env=production,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "plain HTTP" in result.stderr
