"""The browser tests' browser, defined once for every module (see browser_support.py)."""

from tests.e2e.browser_support import browser

__all__ = ["browser"]
