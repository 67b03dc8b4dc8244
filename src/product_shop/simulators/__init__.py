"""Runnable simulators of the other Primoro modules. Each serves the same HTTP contract the
adapter speaks, including failures, timeouts and duplicate deliveries, so the demo and the tests
exercise the real wire format."""
