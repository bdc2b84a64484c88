"""The `gatewayAPI` router: weights, header matches and mirroring on an existing HTTPRoute.

The user's HTTPRoute (spec.rollout.traffic.gatewayAPI.httpRoute) routes to the `<name>` Service.
We rewrite every rule whose backends are all our Services (`<name>`, `<name>-stable`,
`<name>-candidate`, in the route's namespace) to two weighted backends, `<name>-stable` and
`<name>-candidate` (weights 100/0 at rest, so the route never changes shape between rollouts);
mirroring adds a RequestMirror filter to the candidate (or, with `mirroring: pods`, for gateways
that have no such filter, leaves the route alone and has the stable pods copy requests, as the
`replicas` router does); A/B matches add, before those rules, one
rule per match that sends the matching requests to the candidate. Cookie matches become a
regular-expression match on the Cookie header (Gateway API has no cookie match).

Whose route it is: the spec is written by a tenant, the route may be someone else's. We edit it
only when it carries `rollwise.dev/traffic-for: <name>` (`common.consent_refusal`); a rule that
mixes our Services with another backend is refused rather than rewritten (rewriting it would drop
the other backend's share), and a route with no rule of ours is left alone. Refused, the route is
not written at all and reads as not routing, the fix in the message.

We apply only `spec.rules`, server-side with force. The list is atomic, so we send all of it, the
user's other rules byte for byte as they are; force takes the list over from the user's field
manager, which the annotation consents to (re-applying their own version puts it back, and we
re-render from that). parentRefs, hostnames, labels and annotations stay the
user's: the applied object has only name, namespace and `spec.rules` (plus `kube/`'s applied-hash
annotation). User-hash A/B runs through the stable pods' forwarding flags, behind the route,
exactly as with the `replicas` router.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import ClassVar

from rollwise_contract.matches import CookieMatch, HeaderMatch, RequestMatch

from rollwise.api.v1alpha1 import GatewayMirroring, ModelDeployment, TrafficProvider
from rollwise.plan.desired import SERVICE_PORT
from rollwise.plan.manifest import JsonValue, Manifest, as_list, find, name_of
from rollwise.plan.names import Track, track_name
from rollwise.plan.router import Resource, RouterPlan, RouterReading, UserObject
from rollwise.plan.split import TrafficSplit
from rollwise.routers.common import (
    consent_refusal,
    forward_args,
    mirror_args,
    not_found,
    object_ref,
    own_services,
    parsed_match,
    refused,
    serving_flags,
    target_problems,
    with_user_hash,
)

RESOURCE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
API_VERSION = RESOURCE.api_version
KIND = RESOURCE.kind
EDITS = UserObject(RESOURCE, ("gatewayAPI", "httpRoute"))
_COOKIE = re.compile(r"^\(\^\|;\\s\*\)(?P<name>.+?)=(?P<value>.*)\(;\|\$\)$")


def cookie_regex(cookie: CookieMatch) -> str:
    """`session=beta` -> `(^|;\\s*)session=beta(;|$)` on the Cookie header (value escaped)."""
    return f"(^|;\\s*){re.escape(cookie.name)}={re.escape(cookie.value)}(;|$)"


def _header_match(match: RequestMatch) -> JsonValue:
    if match.header is not None:
        h = match.header
        if h.value is not None:
            return {"type": "Exact", "name": h.name, "value": h.value}
        return {"type": "RegularExpression", "name": h.name, "value": h.regex}
    assert match.cookie is not None  # the API allows exactly one of header or cookie
    return {"type": "RegularExpression", "name": "Cookie", "value": cookie_regex(match.cookie)}


def _read_match(header: dict[str, JsonValue]) -> RequestMatch | None:
    return parsed_match(lambda: _match_of(header))


def _match_of(header: dict[str, JsonValue]) -> RequestMatch | None:
    name, value, kind = header.get("name"), header.get("value"), header.get("type", "Exact")
    if not isinstance(name, str) or not isinstance(value, str):
        return None
    if name.lower() == "cookie" and kind == "RegularExpression" and (m := _COOKIE.match(value)):
        return RequestMatch(cookie=CookieMatch(name=_unescape(m["name"]), value=_unescape(m["value"])))
    if kind == "RegularExpression":
        return RequestMatch(header=HeaderMatch(name=name, regex=value))
    return RequestMatch(header=HeaderMatch(name=name, value=value))


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class GatewayApiRouter:
    name: ClassVar[TrafficProvider] = TrafficProvider.GATEWAY_API
    scales_by_weight: ClassVar[bool] = False
    routes_to_tracks: ClassVar[bool] = True
    edits: ClassVar[UserObject | None] = EDITS
    owns: ClassVar[tuple[Resource, ...]] = ()

    def problems(self, md: ModelDeployment) -> list[str]:
        if missing := target_problems(md.spec.rollout.traffic.gateway_api is not None, EDITS):
            return missing
        return []

    def route_name(self, md: ModelDeployment) -> str:
        gw = md.spec.rollout.traffic.gateway_api
        return gw.http_route if gw is not None else ""

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> RouterPlan:
        route = find(live, KIND, self.route_name(md))
        stable_args = forward_args(md, split)
        by_pods = _mirrored_by_pods(md)
        if split.mirror and by_pods:
            stable_args = (*stable_args, *mirror_args(md))
        if route is None or refusal(md, route) is not None:
            return RouterPlan(stable_args=stable_args)  # nothing written to a route not ours to edit
        name, namespace = md.metadata.name, md.metadata.namespace
        candidate = track_name(name, Track.CANDIDATE)
        weight = 0 if split.sticky_header is not None else split.candidate
        rules: list[JsonValue] = []
        for rule in _rules(route):
            if _is_match_rule(rule, candidate, namespace):
                continue  # ours from an earlier render; rebuilt below
            if not _is_ours(md, rule):
                rules.append(rule)  # another service's rule: sent back exactly as it is
                continue
            rules.extend(_match_rules(rule, split.matches, candidate))
            rules.append(_weighted(rule, name, weight, mirror=split.mirror and not by_pods))
        spec: Manifest = {"rules": rules}
        meta: Manifest = {"name": self.route_name(md)}
        if md.metadata.namespace:
            meta["namespace"] = md.metadata.namespace
        return RouterPlan(
            objects=({"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec},),
            stable_args=stable_args,
        )

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterReading:
        route = find(objects, KIND, self.route_name(md))
        if route is None:
            fix = f"create it with a rule routing to Service {md.metadata.name}"
            return not_found(md, KIND, self.route_name(md), fix)
        if (why := refusal(md, route)) is not None:
            return refused(why)
        name = md.metadata.name
        stable, candidate = track_name(name, Track.STABLE), track_name(name, Track.CANDIDATE)
        weights, mirror, matches = _routed(md, route)
        if _mirrored_by_pods(md):
            mirror = serving_flags(md, objects).mirror
        if stable not in weights:
            return RouterReading(None, False, f"HTTPRoute {self.route_name(md)} has no rule for {name}")
        total = weights.get(stable, 0) + weights.get(candidate, 0)
        weight = 0 if total == 0 else round(100 * weights.get(candidate, 0) / total)
        weight, header = with_user_hash(md, objects, weight)
        split = TrafficSplit(candidate=weight, mirror=mirror, matches=tuple(matches), sticky_header=header)
        rejected = _rejection(route)
        return RouterReading(split, rejected is None, rejected or "")


def _mirrored_by_pods(md: ModelDeployment) -> bool:
    gw = md.spec.rollout.traffic.gateway_api
    return gw is not None and gw.mirroring is GatewayMirroring.PODS


def _routed(md: ModelDeployment, route: Manifest) -> tuple[dict[str, int], bool, list[RequestMatch]]:
    """What the route's rules send to the tracks: backend weight per track Service, whether a rule
    mirrors to the candidate, and the A/B matches of the rules we added."""
    name, namespace = md.metadata.name, md.metadata.namespace
    stable, candidate = track_name(name, Track.STABLE), track_name(name, Track.CANDIDATE)
    weights: dict[str, int] = {}
    mirror = False
    matches: list[RequestMatch] = []
    for rule in _rules(route):
        if _is_match_rule(rule, candidate, namespace):
            for m in as_list(rule.get("matches")):
                headers = as_list(m.get("headers"))  # ours is the last; the rest are the base's
                if headers and (found := _read_match(headers[-1])) is not None and found not in matches:
                    matches.append(found)
            continue
        for b in _backends(rule):
            target = _backend_name(b, namespace)
            if target == name:  # not rendered yet: `<name>` selects the stable pods only
                target = stable
            if target in (stable, candidate):
                w = b.get("weight", 1)
                weights[target] = weights.get(target, 0) + (w if isinstance(w, int) else 0)
        mirror = mirror or any(_mirrors_to(f, candidate) for f in as_list(rule.get("filters")))
    return weights, mirror, matches


def refusal(md: ModelDeployment, route: Manifest) -> str | None:
    """Why the router may not edit `route`, or None: it must opt in for `md`, have a rule whose
    backends are all `md`'s Services, and mix `md`'s Services with no other backend in any rule."""
    if (why := consent_refusal(md, route)) is not None:
        return why
    name, namespace = md.metadata.name, md.metadata.namespace
    where = object_ref(md, KIND, name_of(route))
    ours = own_services(md)
    found = False
    for i, rule in enumerate(_rules(route)):
        backends = _backends(rule)
        others = [_describe(b) for b in backends if _backend_name(b, namespace) not in ours]
        if others and len(others) < len(backends):
            return (
                f"{where} spec.rules[{i}] routes to {', '.join(others)} as well as to Service {name}: "
                f"Rollwise splits only a rule whose every backend is this ModelDeployment's Service; "
                f"give {name} a rule of its own"
            )
        found = found or bool(backends and not others)
    if not found:
        return (
            f"{where} has no rule routing to Service {name}; "
            f"add a rule with backendRefs: [{{name: {name}, port: {SERVICE_PORT}}}]"
        )
    return None


def _is_ours(md: ModelDeployment, rule: dict[str, JsonValue]) -> bool:
    """A rule whose every backend is one of `md`'s Services (`refusal` has ruled out mixed ones)."""
    backends = _backends(rule)
    ours = own_services(md)
    return bool(backends) and all(_backend_name(b, md.metadata.namespace) in ours for b in backends)


def _describe(backend: dict[str, JsonValue]) -> str:
    """A backendRef as a message names it: `Service shop`, `Service other/iris`, `Bucket s3`."""
    kind, name, namespace = backend.get("kind", "Service"), backend.get("name"), backend.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _rules(route: Manifest) -> list[dict[str, JsonValue]]:
    spec = route.get("spec")
    return as_list(spec.get("rules")) if isinstance(spec, dict) else []


def _backends(rule: dict[str, JsonValue]) -> list[dict[str, JsonValue]]:
    return as_list(rule.get("backendRefs"))


def _backend_name(backend: dict[str, JsonValue], namespace: str | None) -> str | None:
    """The core Service a backendRef names in `namespace` (the route's), else None: another kind,
    group or namespace is never one of ours, whatever its name."""
    kind, group = backend.get("kind", "Service"), backend.get("group", "")
    name, ref_namespace = backend.get("name"), backend.get("namespace")
    if kind != "Service" or group != "" or ref_namespace not in (None, namespace):
        return None
    return name if isinstance(name, str) else None


def _ref(service: str, weight: int) -> dict[str, JsonValue]:
    return {"kind": "Service", "name": service, "port": SERVICE_PORT, "weight": weight}


def _is_match_rule(rule: dict[str, JsonValue], candidate: str, namespace: str | None) -> bool:
    """A rule we added for an A/B match: it sends matching requests to the candidate alone."""
    backends = _backends(rule)
    return (
        len(backends) == 1
        and _backend_name(backends[0], namespace) == candidate
        and any(as_list(m.get("headers")) for m in as_list(rule.get("matches")))
    )


def _mirrors_to(f: dict[str, JsonValue], service: str) -> bool:
    mirror = f.get("requestMirror")
    ref = mirror.get("backendRef") if isinstance(mirror, dict) else None
    return f.get("type") == "RequestMirror" and isinstance(ref, dict) and ref.get("name") == service


def _weighted(rule: dict[str, JsonValue], name: str, weight: int, *, mirror: bool) -> dict[str, JsonValue]:
    out = copy.deepcopy(rule)
    candidate = track_name(name, Track.CANDIDATE)
    out["backendRefs"] = [_ref(track_name(name, Track.STABLE), 100 - weight), _ref(candidate, weight)]
    filters: list[JsonValue] = [f for f in as_list(rule.get("filters")) if not _mirrors_to(f, candidate)]
    if mirror:
        filters.append(
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"kind": "Service", "name": candidate, "port": SERVICE_PORT}},
            }
        )
    if filters:
        out["filters"] = filters
    else:
        out.pop("filters", None)
    return out


def _match_rules(
    rule: dict[str, JsonValue], matches: Sequence[RequestMatch], candidate: str
) -> list[dict[str, JsonValue]]:
    """One rule per A/B match, keeping the base rule's path so only its requests are diverted."""
    if not matches:
        return []
    base = as_list(rule.get("matches")) or [{}]
    out: list[dict[str, JsonValue]] = []
    for m in matches:
        combined: list[JsonValue] = []
        for b in base:
            entry = {k: v for k, v in b.items() if k != "headers"}
            entry["headers"] = [*as_list(b.get("headers")), _header_match(m)]
            combined.append(entry)
        out.append({"matches": combined, "backendRefs": [_ref(candidate, 1)]})
    return out


def _rejection(route: Manifest) -> str | None:
    """Why the route's current generation is not in effect yet: a parent gateway rejects it, or
    has not accepted it yet (its status still reports an older generation). A gateway writes that
    status once it has loaded the route, so a step waits for it rather than for our own write read
    back; a route no controller has written status on (none attached) is taken as written."""
    meta, status = route.get("metadata"), route.get("status")
    generation = meta.get("generation") if isinstance(meta, dict) else None
    parents = status.get("parents") if isinstance(status, dict) else None
    for parent in as_list(parents):
        ref = parent.get("parentRef")
        gateway = ref.get("name") if isinstance(ref, dict) else None
        for c in as_list(parent.get("conditions")):
            if c.get("type") != "Accepted":
                continue
            seen = c.get("observedGeneration")
            if isinstance(generation, int) and isinstance(seen, int) and seen < generation:
                return (
                    f"HTTPRoute generation {generation} not yet accepted by Gateway {gateway} "
                    f"(its status is for generation {seen})"
                )
            current = generation is None or seen in (None, generation)
            if c.get("status") == "False" and current:
                return f"HTTPRoute not accepted: {c.get('reason')}: {c.get('message')}"
    return None
