"""The `istio` router: weights, header matches and mirroring on an existing VirtualService.

We edit one HTTP route of the user's VirtualService (`istio.route` by name, else the first whose
destinations are all ours): its destinations become `<name>-stable` and `<name>-candidate` with
weights (100/0 at rest), `mirror` + `mirrorPercentage` copy live traffic to the candidate for
shadow, and each A/B match becomes an HTTP route placed before it, named
`rollwise-<name>-candidate-<i>`, that sends the matching requests to the candidate. Istio matches
cookies as a regex on the `cookie` header.

Whose VirtualService it is: the spec is written by a tenant, the VirtualService may serve someone
else. We edit it only when it carries `rollwise.dev/traffic-for: <name>`
(`common.consent_refusal`), and only a route whose every destination host is one of our Services
(`<name>`, `<name>-stable`, `<name>-candidate`, as a short name, `<svc>.<ns>`, `<svc>.<ns>.svc`
or `<svc>.<ns>.svc.cluster.local`); a named route that sends traffic anywhere else is refused,
never rewritten (that is how a route serving a shop could be sent to our candidate). Refused,
nothing is written and the reading says why and how to fix it.

We apply only `spec.http`, server-side with force. The list is atomic, so all of it is sent, every
other route byte for byte as the user wrote it; force takes the list over from the user's field
manager, which the annotation consents to. hosts, gateways, tcp/tls routes, labels and annotations
stay the user's: the applied object has only name, namespace and `spec.http` (plus `kube/`'s
applied-hash annotation). User-hash A/B runs through the stable pods' forwarding flags, as with
every router.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rollwise_contract.matches import CookieMatch, HeaderMatch, RequestMatch

from rollwise.api.v1alpha1 import ModelDeployment, TrafficProvider
from rollwise.plan.manifest import JsonValue, Manifest, as_dict, as_list, find
from rollwise.plan.names import Track, track_name
from rollwise.plan.router import Resource, RouterPlan, RouterReading, UserObject
from rollwise.plan.split import TrafficSplit
from rollwise.routers.common import (
    ab_matches,
    consent_refusal,
    forward_args,
    not_found,
    object_ref,
    own_services,
    parsed_match,
    refused,
    target_problems,
    with_user_hash,
)

RESOURCE = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
API_VERSION = RESOURCE.api_version
KIND = RESOURCE.kind
EDITS = UserObject(RESOURCE, ("istio", "virtualService"))
_COOKIE = re.compile(r"^\^\(\.\*\?;\)\?\(\?:\\s\*\)\?(?P<name>.+?)=(?P<value>.*)\(;\.\*\)\?\$$")


def _fqdn(md: ModelDeployment, track: Track) -> str:
    return f"{track_name(md.metadata.name, track)}.{md.metadata.namespace or 'default'}.svc.cluster.local"


def service_of(md: ModelDeployment, host: JsonValue) -> str | None:
    """Which of `md`'s Services a destination host names, or None.

    Istio resolves a short host in the VirtualService's namespace (ours), so `iris`, `iris.ml`,
    `iris.ml.svc` and `iris.ml.svc.cluster.local` all name the Service `iris`; a host in another
    namespace (`iris.shop`) is someone else's Service, whatever its name.
    """
    if not isinstance(host, str):
        return None
    ns = md.metadata.namespace or "default"
    for svc in own_services(md):
        if host in (svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"):
            return svc
    return None


def _hosts(route: dict[str, JsonValue]) -> list[JsonValue]:
    """An HTTP route's destination hosts (a delegate route has none)."""
    return [as_dict(d.get("destination")).get("host") for d in as_list(route.get("route"))]


def _is_ours(md: ModelDeployment, route: dict[str, JsonValue]) -> bool:
    """Every destination of the route is one of `md`'s Services (and it has one)."""
    hosts = _hosts(route)
    return bool(hosts) and all(service_of(md, h) is not None for h in hosts)


def _is_match_route(md: ModelDeployment, route: dict[str, JsonValue]) -> bool:
    """An A/B route we added: our name prefix and the candidate as its only destination (a user's
    route that merely shares the prefix is the user's, and kept)."""
    candidate = track_name(md.metadata.name, Track.CANDIDATE)
    return str(route.get("name", "")).startswith(_match_prefix(md)) and [
        service_of(md, h) for h in _hosts(route)
    ] == [candidate]


def _match_prefix(md: ModelDeployment) -> str:
    return f"rollwise-{md.metadata.name}-candidate-"


@dataclass(frozen=True)
class _Target:
    """The VirtualService's HTTP routes split into ours to rebuild and the rest, and the route we edit."""

    routes: list[dict[str, JsonValue]]
    """Every route but the A/B routes we added, in order."""
    added: list[dict[str, JsonValue]]
    """The A/B routes we added on an earlier render."""
    index: int
    """The edited route's position in `routes`."""


def cookie_regex(cookie: CookieMatch) -> str:
    """Istio's cookie idiom: `^(.*?;)?(?:\\s*)?session=beta(;.*)?$` on the `cookie` header."""
    return f"^(.*?;)?(?:\\s*)?{re.escape(cookie.name)}={re.escape(cookie.value)}(;.*)?$"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _headers(match: RequestMatch) -> dict[str, JsonValue]:
    if match.header is not None:
        h = match.header
        value: JsonValue = {"exact": h.value} if h.value is not None else {"regex": h.regex}
        return {h.name.lower(): value}
    assert match.cookie is not None  # the API allows exactly one of header or cookie
    return {"cookie": {"regex": cookie_regex(match.cookie)}}


def _read_headers(headers: JsonValue) -> RequestMatch | None:
    return parsed_match(lambda: _headers_match(headers))


def _headers_match(headers: JsonValue) -> RequestMatch | None:
    if not isinstance(headers, dict) or len(headers) != 1:
        return None
    ((name, cond),) = headers.items()
    if not isinstance(cond, dict):
        return None
    exact, regex = cond.get("exact"), cond.get("regex")
    if name == "cookie" and isinstance(regex, str) and (m := _COOKIE.match(regex)):
        return RequestMatch(cookie=CookieMatch(name=_unescape(m["name"]), value=_unescape(m["value"])))
    if isinstance(exact, str):
        return RequestMatch(header=HeaderMatch(name=name, value=exact))
    if isinstance(regex, str):
        return RequestMatch(header=HeaderMatch(name=name, regex=regex))
    return None


def _as_declared(md: ModelDeployment, found: RequestMatch) -> RequestMatch:
    """A header match read back with its name as the spec spells it.

    We write header names lower-cased (Istio matches them only so), and HTTP header names are
    case-insensitive; read back as stored, `X-Variant` would never equal the spec's match and the
    A/B step would wait forever for a split it already routes.
    """
    if found.header is None:
        return found
    for declared in ab_matches(md):
        h = declared.header
        f = found.header
        if h is not None and (h.name.lower(), h.value, h.regex) == (f.name, f.value, f.regex):
            return declared
    return found


class IstioRouter:
    name: ClassVar[TrafficProvider] = TrafficProvider.ISTIO
    scales_by_weight: ClassVar[bool] = False
    routes_to_tracks: ClassVar[bool] = True
    edits: ClassVar[UserObject | None] = EDITS
    owns: ClassVar[tuple[Resource, ...]] = ()

    def problems(self, md: ModelDeployment) -> list[str]:
        if missing := target_problems(md.spec.rollout.traffic.istio is not None, EDITS):
            return missing
        out: list[str] = []
        for i, m in enumerate(ab_matches(md)):
            if m.header is not None and m.header.name.lower() == "cookie":
                out.append(
                    f"spec.rollout.abTest.match[{i}].header.name: istio matches cookies through the "
                    "cookie match; use cookie: {name, value} instead of a Cookie header"
                )
        return out

    def _target(self, md: ModelDeployment) -> tuple[str, str | None]:
        istio = md.spec.rollout.traffic.istio
        return (istio.virtual_service, istio.route) if istio is not None else ("", None)

    def edited_route(self, md: ModelDeployment, vs: Manifest) -> _Target | str:
        """The route to edit in `vs`, or why there is none this ModelDeployment may edit."""
        if (why := consent_refusal(md, vs)) is not None:
            return why
        vs_name, route_name = self._target(md)
        where = object_ref(md, KIND, vs_name)
        added = [r for r in _http(vs) if _is_match_route(md, r)]
        routes = [r for r in _http(vs) if not _is_match_route(md, r)]
        services = ", ".join(own_services(md))
        if route_name is None:
            index = next((i for i, r in enumerate(routes) if _is_ours(md, r)), None)
            if index is None:
                return (
                    f"{where} has no HTTP route whose destinations are all this ModelDeployment's Services "
                    f"({services}); add one routing to {md.metadata.name}, or name it in "
                    "spec.rollout.traffic.istio.route"
                )
            return _Target(routes, added, index)
        index = next((i for i, r in enumerate(routes) if r.get("name") == route_name), None)
        if index is None:
            return (
                f"{where} has no HTTP route named {route_name}; name one of its HTTP routes in "
                "spec.rollout.traffic.istio.route"
            )
        if not _is_ours(md, routes[index]):
            hosts = ", ".join(str(h) for h in _hosts(routes[index])) or "no destination"
            return (
                f"HTTP route {route_name} of {where} routes to {hosts}, not only to this ModelDeployment's "
                f"Services ({services}), so Rollwise will not edit it; set spec.rollout.traffic.istio.route "
                f"to a route whose every destination is {md.metadata.name}"
            )
        return _Target(routes, added, index)

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> RouterPlan:
        vs_name, _ = self._target(md)
        vs = find(live, KIND, vs_name)
        stable_args = forward_args(md, split)
        chosen = self.edited_route(md, vs) if vs is not None else None
        if not isinstance(chosen, _Target):
            return RouterPlan(stable_args=stable_args)  # nothing written to a VirtualService not ours
        routes, index = chosen.routes, chosen.index
        prefix = _match_prefix(md)
        weight = 0 if split.sticky_header is not None else split.candidate
        target = copy.deepcopy(routes[index])
        target["route"] = [
            {"destination": {"host": _fqdn(md, Track.STABLE)}, "weight": 100 - weight},
            {"destination": {"host": _fqdn(md, Track.CANDIDATE)}, "weight": weight},
        ]
        target.pop("mirror", None)
        target.pop("mirrorPercentage", None)
        if split.mirror:
            target["mirror"] = {"host": _fqdn(md, Track.CANDIDATE)}
            target["mirrorPercentage"] = {"value": 100.0}
        base_matches = as_list(target.get("match")) or [{}]
        added: list[JsonValue] = []
        for i, m in enumerate(split.matches):
            combined: list[JsonValue] = [
                {**b, "headers": {**as_dict(b.get("headers")), **_headers(m)}} for b in base_matches
            ]
            added.append(
                {
                    "name": f"{prefix}{i}",
                    "match": combined,
                    "route": [{"destination": {"host": _fqdn(md, Track.CANDIDATE)}}],
                }
            )
        # Every other route is the live dict itself: sent back exactly as the user wrote it.
        http: list[JsonValue] = [*routes[:index], *added, target, *routes[index + 1 :]]
        meta: Manifest = {"name": vs_name}
        if md.metadata.namespace:
            meta["namespace"] = md.metadata.namespace
        obj: Manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": {"http": http}}
        return RouterPlan(objects=(obj,), stable_args=stable_args)

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterReading:
        vs_name, _ = self._target(md)
        vs = find(objects, KIND, vs_name)
        if vs is None:
            return not_found(md, KIND, vs_name)
        chosen = self.edited_route(md, vs)
        if isinstance(chosen, str):
            return refused(chosen)
        target = chosen.routes[chosen.index]
        stable, candidate = (track_name(md.metadata.name, t) for t in (Track.STABLE, Track.CANDIDATE))
        weights: dict[str, int] = {}
        for dest in as_list(target.get("route")):
            service = service_of(md, as_dict(dest.get("destination")).get("host"))
            w = dest.get("weight", 100)
            if service == md.metadata.name:  # not rendered yet: `<name>` is stable-only
                service = stable
            if service is not None:
                weights[service] = weights.get(service, 0) + (w if isinstance(w, int) else 0)
        if stable not in weights:
            where = object_ref(md, KIND, vs_name)
            return RouterReading(None, False, f"{where} does not route to {_fqdn(md, Track.STABLE)}")
        total = weights.get(stable, 0) + weights.get(candidate, 0)
        weight = 0 if total == 0 else round(100 * weights.get(candidate, 0) / total)
        mirror = service_of(md, as_dict(target.get("mirror")).get("host")) == candidate
        matches: list[RequestMatch] = []
        for r in chosen.added:
            for m in as_list(r.get("match")):
                headers = as_dict(m.get("headers"))
                mine = {k: v for k, v in headers.items() if k not in _base_header_names(target)}
                found = _read_headers(mine)
                if found is not None and (found := _as_declared(md, found)) not in matches:
                    matches.append(found)
        weight, header = with_user_hash(md, objects, weight)
        return RouterReading(
            TrafficSplit(candidate=weight, mirror=mirror, matches=tuple(matches), sticky_header=header), True
        )


def _http(vs: Manifest) -> list[dict[str, JsonValue]]:
    spec = vs.get("spec")
    return as_list(spec.get("http")) if isinstance(spec, dict) else []


def _base_header_names(route: dict[str, JsonValue]) -> set[str]:
    return {k for m in as_list(route.get("match")) for k in as_dict(m.get("headers"))}
