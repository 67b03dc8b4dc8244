"""core/process.py: a long-running process's start-up objects kept out of the garbage
collector's way, and the API worker doing it once its app is built."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from product_shop import serve

# Run in a process of its own: freezing the test runner's objects would keep them for good.
_FREEZE_CHECK = textwrap.dedent(
    """
    import gc, weakref
    from product_shop.core.process import freeze_start_up

    gc.disable()  # only the collections asked for below, so the checks see what each one does

    class Node:
        pass

    # Garbage start-up left behind (an unreachable cycle): collected, not frozen for good.
    left = Node(); left.me = left
    gone = weakref.ref(left)
    del left
    kept = [Node() for _ in range(5000)]  # what lives for the process's life

    freeze_start_up()
    assert gone() is None, "start-up garbage was frozen instead of collected"
    assert gc.get_freeze_count() >= len(kept)
    tracked = len(gc.get_objects(generation=2))
    assert tracked < 1000, tracked  # the kept objects are out of full collections' walk

    # Garbage made later is still collected.
    later = Node(); later.me = later
    later_ref = weakref.ref(later)
    del later
    gc.collect()
    assert later_ref() is None
    print("ok")
    """
)


def test_freeze_start_up_collects_start_up_garbage_then_freezes_what_lives() -> None:
    done = subprocess.run(  # noqa: S603 (our own interpreter, fixed arguments)
        [sys.executable, "-c", _FREEZE_CHECK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_an_api_worker_freezes_once_its_app_is_built_and_before_it_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app (and all it imports) is loaded first, so the freeze takes it; serving comes
    after, so nothing a request makes is frozen."""
    steps: list[str] = []

    def load(self: Any) -> None:
        steps.append("load app")

    def run(self: Any, sockets: Any = None) -> None:
        steps.append("serve")
        for sock in sockets or []:
            sock.close()

    monkeypatch.setattr(serve.uvicorn.Config, "load", load)
    monkeypatch.setattr(serve.uvicorn.Server, "run", run)
    monkeypatch.setattr(serve, "freeze_start_up", lambda: steps.append("freeze"))

    serve.run_worker("127.0.0.1", 0, reuse_port=False)

    assert steps == ["load app", "freeze", "serve"]
