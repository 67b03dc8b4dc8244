"""API fuzzing (issue 17): schemathesis against the OpenAPI document of a seeded app.

Every operation of the served document is fuzzed over real HTTP as each kind of caller (a
patient, a practice admin, finance staff with fresh MFA, a clinician, the catalogue admin, the
platform operator, a service, and no token at all), with schema-valid (positive) and
schema-violating (negative) requests, a bounded number of examples each, derandomized so a run is
repeatable. Path ids are sometimes generated and sometimes the seeded ones (a product the practice
offers, an open checkout, a placed order), so the fuzz reaches past the 404s.

What every response must satisfy:
- no 5xx (`not_a_server_error`);
- its status code, content type, headers and body are the documented ones
  (`status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`);
- a negative request is rejected with a 4xx (`negative_data_rejection`);
- every 4xx/5xx is `application/problem+json` with `type`, `title`, `status` (the response's)
  and `code`.

No operation of the document is excluded. The webhooks (`/v1/webhooks/*`) take no bearer token
but a Standard Webhooks signature the fuzzer cannot forge: they are fuzzed all the same and must
answer a problem+json 4xx (401 for a missing or bad signature), never a 5xx. What is not in the
document is not fuzzed: `/metrics` (Prometheus text for the monitoring networks, no JSON API),
`/docs` and its assets, `/openapi.json` itself.

SQLite only: the fuzz looks for contract gaps in the web layer, which do not depend on the engine
(the engine-specific paths have their own tests on both engines), and a second engine would
double the file's run time.

Each generated request is sent once as every caller (generating is the slow part, sending is
cheap). At the end the test prints the operations tested, the examples generated, the requests
sent and the distinct failures, even without `-s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from product_shop.simulators.server import BackgroundServer
from tests.conftest import World
from tests.integration.checkout_support import Shop, start_checkout
from tests.integration.fulfilment_support import place_order

# Examples generated per operation and generation mode (each sent as every caller): bounded so
# the file stays fast (about 30 s on a 2-core machine).
POSITIVE_EXAMPLES = 6
NEGATIVE_EXAMPLES = 3

# `negative_data_rejection` looks at negative cases only.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
PROBLEM_FIELDS = ("type", "title", "status", "code")


@pytest.fixture
def engine_name() -> str:
    """SQLite is enough for the fuzz (see the module docstring)."""
    return "sqlite"


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    examples: int = 0
    requests: int = 0
    failures: dict[tuple[str, ...], str] = field(default_factory=dict)
    nothing_to_negate: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)


def _problem_check(response: schemathesis.Response) -> None:
    if response.status_code < 400:
        return
    content_type = ";".join(response.headers.get("content-type", []))
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} answered as {content_type!r}: {response.text[:300]}"
    )
    body = response.json()
    missing = [name for name in PROBLEM_FIELDS if name not in body]
    assert not missing, f"problem without {missing}: {body}"
    assert body["status"] == response.status_code, body


def _seeded_ids(client: TestClient, world: World, shop: Shop) -> dict[str, str]:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 1)])
    checkout = start_checkout(client, world.patient_a, [(shop.kit, 1)])
    assert checkout.status_code == 201, checkout.text
    return {
        "product_id": str(shop.toothbrush),
        "order_id": str(order["order_id"]),
        "checkout_id": str(checkout.json()["id"]),
        "line_item_id": str(order["lines"][0]["line_item_id"]),
        "patient_id": world.patient_a.actor.actor_id,
    }


def _fuzz_operation(
    operation: Any,
    *,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    session: requests.Session,
    callers: dict[str, dict[str, str]],
    known_ids: dict[str, str],
    tally: Tally,
) -> None:
    """`examples` generated requests, each sent once as every caller (generating is the slow
    part; sending is cheap). Every distinct failure is recorded, none stops the run."""
    generated = operation.as_strategy(generation_mode=mode)
    path_names = [p.name for p in operation.path_parameters]
    known = {name: known_ids[name] for name in path_names if name in known_ids}
    strategy = generated
    if known and len(known) == len(path_names):
        seeded = operation.as_strategy(generation_mode=mode, path_parameters=known)
        strategy = st.one_of(generated, seeded)

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case[Any]) -> None:
        tally.examples += 1
        for label, auth in callers.items():
            tally.requests += 1
            try:
                response = case.call(base_url=base_url, session=session, headers=auth, timeout=15)
                case.validate_response(response, checks=CHECKS, headers=auth)
                _problem_check(response)
            except (Exception, BaseExceptionGroup) as exc:  # collected, reported at the end
                kinds = sorted({type(e).__name__ for e in getattr(exc, "exceptions", [exc])})
                where = (operation.label, label, mode.value, *kinds)
                if where not in tally.failures:
                    tally.failures[where] = str(exc)

    started = time.monotonic()
    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to negate: an operation without parameters or body has no invalid request.
        assert mode == GenerationMode.NEGATIVE, operation.label
        tally.nothing_to_negate.add(operation.label)
    spent = time.monotonic() - started
    tally.seconds[operation.label] = tally.seconds.get(operation.label, 0.0) + spent


def test_every_operation_survives_fuzzing_as_every_caller(
    client: TestClient,
    live_api: BackgroundServer,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    known_ids = _seeded_ids(client, world, shop)
    document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations: list[Any] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation schemathesis cannot load fails the test
            raise result.err()
        operations.append(result.ok())
    assert len(operations) > 30, len(operations)  # the whole API, not a fraction of it

    callers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "patient": world.patient_a.headers,
        "practice_admin": world.admin_a.headers,
        "finance+mfa": with_mfa(world.finance_a),
        "clinician": world.clinician_a.headers,
        "catalogue_admin": world.catalogue_admin.headers,
        "platform_operator": world.operator.headers,
        "service": world.service.headers,
    }
    tally = Tally()
    started = time.monotonic()
    with requests.Session() as session:
        for operation in operations:
            tally.operations.add(operation.label)
            for mode, examples in (
                (GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
            ):
                _fuzz_operation(
                    operation,
                    mode=mode,
                    examples=examples,
                    base_url=live_api.url,
                    session=session,
                    callers=callers,
                    known_ids=known_ids,
                    tally=tally,
                )
    elapsed = time.monotonic() - started
    with capsys.disabled():  # the numbers issue 17 asks for, shown without -s
        print(
            f"\nschemathesis: {len(tally.operations)} operations x {len(callers)} callers, "
            f"{tally.examples} examples generated, {tally.requests} requests in {elapsed:.1f} s, "
            f"{len(tally.failures)} distinct failures; "
            f"no negative requests exist for {sorted(tally.nothing_to_negate)}; slowest: "
            + ", ".join(
                f"{name} {seconds:.1f} s"
                for name, seconds in sorted(tally.seconds.items(), key=lambda kv: -kv[1])[:5]
            )
        )
    assert not tally.failures, "\n\n".join(
        f"[{' '.join(where[1:])}] {where[0]}: {message}"
        for where, message in tally.failures.items()
    )
