"""Long-running processes (API workers, the relay, the jobs worker, the simulators): what they
build at start-up kept out of the cyclic garbage collector's way."""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach (`gc.freeze`):
    the modules, the app, its context and caches, which live as long as the process. Without
    this every full collection walked them all again: in the checkout benchmark an API worker's
    full collections took up to 380 ms each while holding the GIL, stalling every request the
    worker had in flight (docs/benchmarks.md, session 14). Objects made later are collected as
    before; frozen ones are still freed by reference counting when they go."""
    gc.collect()  # what start-up already left as garbage goes now, not kept for good
    gc.freeze()
