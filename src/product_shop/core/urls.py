"""Origins of URLs (scheme, host and port), as browsers compare them."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, lower-cased, the scheme's default port left
    out; None for anything else (another scheme, no host, credentials in it, a bad port)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def is_origin(text: str) -> bool:
    """Whether `text` is an origin and nothing more (no path beyond `/`, no query or fragment)."""
    if origin_of(text) is None:
        return False
    parts = urlsplit(text.strip())
    return parts.path in ("", "/") and not parts.query and not parts.fragment
