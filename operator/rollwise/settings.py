"""Operator settings, read once from the environment at start-up (the chart sets every one).

Each setting names its unit and why its default is what it is. A bad value stops the operator
at start with a message naming the variable and the fix; it never falls back silently.
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from rollwise.plan.guardrails import Guardrails
from rollwise.routers import ROUTERS  # the names users write in spec.rollout.traffic.provider

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """One or more environment variables are invalid; the message lists every one."""


@dataclass(frozen=True)
class OperatorSettings:
    serving_image: str
    """Image for serving pods when a ModelDeployment names none (the chart sets its own tag)."""
    batch_image: str
    """Image for a ModelBatchJob's pods when it names none (`ROLLWISE_BATCH_IMAGE`): the serving
    image's batch variant, which adds the pyarrow and pandas `rollwise-batch` needs (the plain
    serving image leaves them out). Unset: the serving image's tag plus `-batch`, the tag
    `serving-image/build-image.sh --variant batch` gives, so a version moves both together."""
    prometheus_url: str
    """Where analysis queries go; empty means analysis steps fail with a clear reason."""
    watch_namespace: str
    """Empty: all namespaces (cluster-wide RBAC); otherwise comma-separated names or globs (Kopf's
    namespace patterns, e.g. ``team-*``) — one plain name pairs with the chart's namespaced RBAC.
    With a glob, Kopf stops watching a namespace once it terminates: delete its ModelDeployments
    before the namespace, or their finalizers keep it Terminating."""
    metrics_port: int
    """The operator's own /metrics; 9100 so it never collides with a serving pod's 8080."""
    liveness_endpoint: str
    """Kopf's health endpoint, probed by the Deployment's livenessProbe."""
    peering: str
    """KopfPeering name shared by all replicas; with 2 replicas only the highest priority acts."""
    peering_priority: int
    """Distinct per replica: equal priorities make Kopf pause every peer (see nolar/kopf#... docs)."""
    resync_seconds: float
    """How often an idle ModelDeployment is re-planned from the indexed world (reads only)."""
    log_level: str
    batch_resync_seconds: float = 300.0
    """How long a running ModelBatchJob goes without a pass when no event came
    (`ROLLWISE_BATCH_RESYNC_SECONDS`): its Job's changes wake it at once, so this only bounds
    the cost of a missed watch event."""
    peering_lifetime_seconds: int = 60
    """How long a peer counts as alive after its last keep-alive (`ROLLWISE_PEERING_LIFETIME_SECONDS`).
    A leader killed without a goodbye is replaced after at most this long; keep-alives (one write
    per replica) go out 5-10 s before it ends. 60 is Kopf's default."""
    routers: frozenset[str] = frozenset({"replicas"})
    """Traffic routers this installation serves (`ROLLWISE_ROUTERS`, comma-separated): only their
    objects are watched, so a cluster without Gateway API or Istio CRDs needs no RBAC for them."""
    webhook_allowed_hosts: frozenset[str] = frozenset()
    """Webhook host names allowed whatever they resolve to (`ROLLWISE_WEBHOOK_ALLOWED_HOSTS`)."""
    webhook_allowed_cidrs: tuple[Network, ...] = ()
    """Address ranges webhooks may reach although refused otherwise (`ROLLWISE_WEBHOOK_ALLOWED_CIDRS`)."""
    webhook_denied_cidrs: tuple[Network, ...] = ()
    """Ranges refused on top of loopback, link-local and the API server
    (`ROLLWISE_WEBHOOK_DENIED_CIDRS`): set the cluster's pod and service ranges here."""
    guardrails: Guardrails = field(default_factory=Guardrails)
    """What a ModelDeployment may ask for (`ROLLWISE_GUARDRAILS`, JSON of the chart's `guardrails`)."""


def _int(env: Mapping[str, str], key: str, default: int, errors: list[str], *, low: int, high: int) -> int:
    raw = env.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{key}={raw!r} is not a whole number; use a value from {low} to {high}")
        return default
    if not low <= value <= high:
        errors.append(f"{key}={value} is out of range; use a value from {low} to {high}")
    return value


def from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    env = os.environ if env is None else env
    errors: list[str] = []
    log_level = env.get("ROLLWISE_LOG_LEVEL", "info").lower()
    if log_level not in LOG_LEVELS:
        errors.append(f"ROLLWISE_LOG_LEVEL={log_level!r} is unknown; use one of {', '.join(LOG_LEVELS)}")
    prometheus_url = env.get("ROLLWISE_PROMETHEUS_URL", "")
    if prometheus_url and not prometheus_url.startswith(("http://", "https://")):
        errors.append(
            f"ROLLWISE_PROMETHEUS_URL={prometheus_url!r} is not an http(s) URL; "
            "use e.g. http://prometheus.monitoring:9090"
        )
    metrics_port = _int(env, "ROLLWISE_METRICS_PORT", 9100, errors, low=1, high=65535)
    resync = _int(env, "ROLLWISE_RESYNC_SECONDS", 300, errors, low=5, high=86400)
    batch_resync = _int(env, "ROLLWISE_BATCH_RESYNC_SECONDS", 300, errors, low=5, high=86400)
    priority = _int(env, "ROLLWISE_PEERING_PRIORITY", random.randint(1, 32767), errors, low=0, high=2**31 - 1)
    lifetime = _int(env, "ROLLWISE_PEERING_LIFETIME_SECONDS", 60, errors, low=5, high=3600)

    routers = {r.strip() for r in env.get("ROLLWISE_ROUTERS", "replicas").split(",") if r.strip()}
    unknown = sorted(routers - set(ROUTERS))
    if unknown:
        errors.append(
            f"ROLLWISE_ROUTERS names unknown routers {unknown}; use any of {', '.join(sorted(ROUTERS))}"
        )
    allowed = _cidrs(env, "ROLLWISE_WEBHOOK_ALLOWED_CIDRS", errors)
    denied = _cidrs(env, "ROLLWISE_WEBHOOK_DENIED_CIDRS", errors)
    hosts = frozenset(
        h.strip().lower().rstrip(".")
        for h in env.get("ROLLWISE_WEBHOOK_ALLOWED_HOSTS", "").split(",")
        if h.strip()
    )
    guardrails = Guardrails()
    try:
        guardrails = Guardrails.model_validate_json(env.get("ROLLWISE_GUARDRAILS") or "{}")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(the whole value)"
        errors.append(
            f"ROLLWISE_GUARDRAILS: {where}: {first['msg']}; set the chart's guardrails as documented "
            "in charts/rollwise/values.yaml"
        )
    serving_image = env.get("ROLLWISE_SERVING_IMAGE", "rollwise/serving:0.1.0")
    batch_image = env.get("ROLLWISE_BATCH_IMAGE", "") or batch_variant_of(serving_image)
    if not batch_image:
        errors.append(
            f"ROLLWISE_BATCH_IMAGE is unset and ROLLWISE_SERVING_IMAGE={serving_image!r} has no tag to "
            "add -batch to; set ROLLWISE_BATCH_IMAGE, e.g. rollwise/serving:0.1.0-batch"
        )
    if errors:
        raise SettingsError("invalid operator settings:\n  " + "\n  ".join(errors))
    return OperatorSettings(
        serving_image=serving_image,
        batch_image=batch_image,
        prometheus_url=prometheus_url,
        watch_namespace=env.get("ROLLWISE_WATCH_NAMESPACE", ""),
        metrics_port=metrics_port,
        liveness_endpoint=env.get("ROLLWISE_LIVENESS_ENDPOINT", ""),
        peering=env.get("ROLLWISE_PEERING", ""),
        peering_priority=priority,
        peering_lifetime_seconds=lifetime,
        resync_seconds=float(resync),
        batch_resync_seconds=float(batch_resync),
        log_level=log_level,
        routers=frozenset(routers | {"replicas"}),
        webhook_allowed_hosts=hosts,
        webhook_allowed_cidrs=allowed,
        webhook_denied_cidrs=denied,
        guardrails=guardrails,
    )


def batch_variant_of(serving_image: str) -> str:
    """The batch variant's tag of `serving_image`, or "" when it has no tag to extend.

    A digest is dropped: it names the plain image's build, never the variant's.
    `reg:5000/rollwise/serving:0.1.0@sha256:ab` -> `reg:5000/rollwise/serving:0.1.0-batch`;
    `rollwise/serving` -> ``."""
    name = serving_image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return f"{name}-batch" if colon > slash else ""


def _cidrs(env: Mapping[str, str], key: str, errors: list[str]) -> tuple[Network, ...]:
    out: list[Network] = []
    for raw in (c.strip() for c in env.get(key, "").split(",")):
        if not raw:
            continue
        try:
            out.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            errors.append(f"{key}: {raw!r} is not an address range; use CIDRs such as 10.96.0.0/12")
    return tuple(out)
