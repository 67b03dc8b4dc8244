"""`GET /metrics`: the Prometheus text exposition, for the monitoring network only.

A caller whose address is outside `metrics_allowed_networks` gets the same problem+json 404 as
for a path that does not exist. The samples carry codes and names of things (stages, reason
codes, route templates, destinations), never ids or personal data. With several workers
(`product-shop serve --workers N`) each answers with every worker's samples summed
(`insights.metrics.metrics_registry`); the outbox gauges are read from the database per scrape
(`insights.collector`). Not in the OpenAPI document: it is not part of the API.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from product_shop.core.errors import NotFound
from product_shop.insights.collector import OutboxCollector
from product_shop.insights.metrics import metrics_registry
from product_shop.web.deps import ContextDep

router = APIRouter(include_in_schema=False)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@router.get("/metrics")
def metrics(request: Request, context: ContextDep) -> Response:
    allowed = _networks(tuple(context.settings.metrics_allowed_networks))
    if not _within(request.client.host if request.client else None, allowed):
        raise NotFound("No such resource.")
    registry = metrics_registry(OutboxCollector(context.database.reading, context.clock))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _within(host: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether the peer's address is in one of `networks` (an IPv4-mapped IPv6 address counts
    as its IPv4 address; a host that is not an address never does)."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
