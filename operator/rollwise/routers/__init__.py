"""Traffic routers, one module per `spec.rollout.traffic.provider` value.

Each implements `plan.routing.Router`; the I/O layer picks one with `router_for` and passes it to
`plan.machine.decide`. A provider without a router is an error naming the field, never a quiet
fallback to another router. A user's route object is edited only when it carries `TRAFFIC_FOR`
naming the ModelDeployment (`common.consent_refusal`).
"""

from __future__ import annotations

from rollwise.api.v1alpha1 import TrafficProvider
from rollwise.plan.router import Router
from rollwise.routers.common import TRAFFIC_FOR
from rollwise.routers.gateway_api import GatewayApiRouter
from rollwise.routers.istio import IstioRouter
from rollwise.routers.nginx import NginxRouter
from rollwise.routers.replicas import ReplicasRouter

__all__ = ["ROUTERS", "TRAFFIC_FOR", "UnknownRouterError", "enabled_routers", "router_for"]

ROUTERS: dict[str, Router] = {
    r.name.value: r for r in (ReplicasRouter(), GatewayApiRouter(), IstioRouter(), NginxRouter())
}


class UnknownRouterError(ValueError):
    """spec.rollout.traffic.provider names no router."""


def router_for(provider: TrafficProvider | str) -> Router:
    """The router for a provider name, e.g. `router_for("gatewayAPI")`."""
    try:
        return ROUTERS[str(provider)]
    except KeyError:
        known = ", ".join(sorted(ROUTERS))
        raise UnknownRouterError(
            f"spec.rollout.traffic.provider: {str(provider)!r} is not a traffic router; use one of {known}"
        ) from None


def enabled_routers(enabled: frozenset[str]) -> list[Router]:
    """The routers an installation enables (`settings.routers`), in registry order."""
    return [r for name, r in ROUTERS.items() if name in enabled]
