"""The simulators' timeline: one thread runs every scheduled step at its time, in order."""

from __future__ import annotations

import threading
import time

from product_shop.simulators.timeline import Timeline


def _wait_until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)


def test_steps_run_in_the_order_they_fall_due_not_the_order_they_were_added() -> None:
    timeline = Timeline()
    ran: list[str] = []
    timeline.after(0.15, ran.append, "late")
    timeline.after(0.05, ran.append, "early")
    timeline.after(0.05, ran.append, "early, added second")
    timeline.after(0, ran.append, "now")
    _wait_until(lambda: len(ran) == 4)
    assert ran == ["now", "early", "early, added second", "late"]


def test_a_step_does_not_run_before_its_time() -> None:
    timeline = Timeline()
    ran = threading.Event()
    added = time.monotonic()
    timeline.after(0.2, lambda: ran.set())
    assert ran.wait(5)
    assert time.monotonic() - added >= 0.2


def test_a_failing_step_does_not_stop_the_ones_after_it() -> None:
    timeline = Timeline()
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("a step's own failure")

    timeline.after(0, fail)
    timeline.after(0.01, ran.append, 1)
    _wait_until(lambda: ran == [1])
    assert ran == [1]
    assert timeline.pending() == 0


def test_thousands_of_steps_share_one_thread() -> None:
    timeline = Timeline("one-thread-for-all")
    before = threading.active_count()
    ran: list[int] = []
    for i in range(3000):
        timeline.after(0.3, ran.append, i)
    assert threading.active_count() <= before + 1
    _wait_until(lambda: len(ran) == 3000)
    assert ran == list(range(3000))
