import io
import json
import logging

import structlog

from product_shop.logging import configure_logging, get_logger


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_lines_are_json_with_the_bound_request_id() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    structlog.contextvars.bind_contextvars(request_id="req-123")
    try:
        get_logger("t").info("catalogue_read", items=3)
        logging.getLogger("foreign.library").warning("from the standard library")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = _lines(stream)
    assert [line["event"] for line in lines] == ["catalogue_read", "from the standard library"]
    assert all(line["request_id"] == "req-123" for line in lines)


def test_tokens_secrets_and_personal_fields_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    get_logger("t").info(
        "oops",
        authorization=f"Bearer {jwt_like}",
        name="Penny Patient",
        delivery_address="1 High St",
        note=f"header was Bearer {jwt_like}",
    )
    output = stream.getvalue()
    assert jwt_like not in output
    assert "Penny Patient" not in output
    assert "1 High St" not in output
    (line,) = _lines(stream)
    assert line["name"] == "[redacted]"
