"""One browser for the whole session, shared by every browser test module (a second
`sync_playwright()` in the same process would fail while the first runs)."""

from tests.e2e.browser_support import browser

__all__ = ["browser"]
