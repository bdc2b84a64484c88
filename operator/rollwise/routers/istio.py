"""The `istio` router: weights, header matches and mirroring on an existing VirtualService.

We edit one HTTP route of the user's VirtualService (`istio.route` by name, else the first):
its destinations become `<name>-stable` and `<name>-candidate` with weights (100/0 at rest),
`mirror` + `mirrorPercentage` copy live traffic to the candidate for shadow, and each A/B match
becomes an HTTP route placed before it, named `rollwise-<name>-candidate-<i>`, that sends the
matching requests to the candidate. Istio matches cookies as a regex on the `cookie` header.

We apply only `spec.http` (an atomic list: all of it is sent, the user's other routes as they
are); hosts and gateways stay the user's. User-hash A/B runs through the stable pods'
forwarding flags, as with every router.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import ClassVar

from rollwise_contract.matches import CookieMatch, HeaderMatch, RequestMatch

from rollwise.api.v1alpha1 import ModelDeployment, TrafficProvider
from rollwise.plan.manifest import JsonValue, Manifest, as_dict, as_list, find
from rollwise.plan.names import Track, track_name
from rollwise.plan.router import Resource, RouterPlan, RouterReading, UserObject
from rollwise.plan.split import TrafficSplit
from rollwise.routers.common import ab_matches, forward_args, not_found, target_problems, with_user_hash

RESOURCE = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
API_VERSION = RESOURCE.api_version
KIND = RESOURCE.kind
EDITS = UserObject(RESOURCE, ("istio", "virtualService"))
_COOKIE = re.compile(r"^\^\(\.\*\?;\)\?\(\?:\\s\*\)\?(?P<name>.+?)=(?P<value>.*)\(;\.\*\)\?\$$")


def _fqdn(md: ModelDeployment, track: Track) -> str:
    return f"{track_name(md.metadata.name, track)}.{md.metadata.namespace or 'default'}.svc.cluster.local"


def _main_fqdn(md: ModelDeployment) -> str:
    return f"{md.metadata.name}.{md.metadata.namespace or 'default'}.svc.cluster.local"


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

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> RouterPlan:
        vs_name, route_name = self._target(md)
        vs = find(live, KIND, vs_name)
        stable_args = forward_args(md, split)
        if vs is None:
            return RouterPlan(stable_args=stable_args)
        prefix = f"rollwise-{md.metadata.name}-candidate-"
        routes = [r for r in _http(vs) if not str(r.get("name", "")).startswith(prefix)]
        index = _route_index(routes, route_name)
        if index is None:
            return RouterPlan(stable_args=stable_args)
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
        http: list[JsonValue] = [*routes[:index], *added, target, *routes[index + 1 :]]
        meta: Manifest = {"name": vs_name}
        if md.metadata.namespace:
            meta["namespace"] = md.metadata.namespace
        obj: Manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": {"http": http}}
        return RouterPlan(objects=(obj,), stable_args=stable_args)

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterReading:
        vs_name, route_name = self._target(md)
        vs = find(objects, KIND, vs_name)
        if vs is None:
            return not_found(md, KIND, vs_name)
        prefix = f"rollwise-{md.metadata.name}-candidate-"
        all_routes = _http(vs)
        ours = [r for r in all_routes if str(r.get("name", "")).startswith(prefix)]
        routes = [r for r in all_routes if r not in ours]
        index = _route_index(routes, route_name)
        if index is None:
            return RouterReading(
                None, False, f"VirtualService {vs_name} has no route {route_name or ''}".strip()
            )
        target = routes[index]
        weights: dict[str, int] = {}
        for dest in as_list(target.get("route")):
            d = dest.get("destination")
            host = d.get("host") if isinstance(d, dict) else None
            w = dest.get("weight", 100)
            if host in (md.metadata.name, _main_fqdn(md)):  # not rendered yet: `<name>` is stable-only
                host = _fqdn(md, Track.STABLE)
            if isinstance(host, str):
                weights[host] = weights.get(host, 0) + (w if isinstance(w, int) else 0)
        stable, candidate = _fqdn(md, Track.STABLE), _fqdn(md, Track.CANDIDATE)
        if stable not in weights:
            return RouterReading(None, False, f"VirtualService {vs_name} does not route to {stable}")
        total = weights.get(stable, 0) + weights.get(candidate, 0)
        weight = 0 if total == 0 else round(100 * weights.get(candidate, 0) / total)
        mirror_to = target.get("mirror")
        mirror = isinstance(mirror_to, dict) and mirror_to.get("host") == candidate
        matches: list[RequestMatch] = []
        for r in ours:
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


def _route_index(routes: list[dict[str, JsonValue]], name: str | None) -> int | None:
    if name is None:
        return 0 if routes else None
    return next((i for i, r in enumerate(routes) if r.get("name") == name), None)


def _base_header_names(route: dict[str, JsonValue]) -> set[str]:
    return {k for m in as_list(route.get("match")) for k in as_dict(m.get("headers"))}
