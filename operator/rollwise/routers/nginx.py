"""The `nginx` router: ingress-nginx canary annotations on a second Ingress.

Beside the user's Ingress (spec.rollout.traffic.nginx.ingress, routing to the `<name>` Service)
we own a canary Ingress `<name>-candidate` with the same class, hosts and paths, pointing at the
`<name>-candidate` Service, and annotations `canary: "true"`, `canary-weight` (0 at rest, so
the pair never changes shape between rollouts) and, for A/B, `canary-by-header` /
`canary-by-header-value` / `canary-by-header-pattern` or `canary-by-cookie`. Shadow sets
`mirror-target` on the user's Ingress.

Whose Ingress it is: the spec is written by a tenant, the Ingress may be someone else's. A canary
copies the Ingress's hosts and paths, and `mirror-target` copies every request the Ingress serves
(its cookies and Authorization header included), so both act on the whole Ingress. We therefore
route an Ingress only when it carries `rollwise.dev/traffic-for: <name>` (`common.consent_refusal`)
and every backend it has (each path's and `defaultBackend`) is one of our Services; otherwise no
canary is rendered, nothing is written to the Ingress, and the reading says why and how to fix it.

On the user's Ingress we apply, server-side with force, only the `mirror-target` annotation: the
applied object has name, namespace and that one annotation (plus `kube/`'s applied-hash one), so
its rules, class, labels and other annotations stay the user's; force takes `mirror-target` from
whoever set it before, which the opt-in annotation consents to.

ingress-nginx supports one header and one cookie rule per canary, and routes a cookie canary only
when its value is `always`; anything else is refused with the fix named, never approximated.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial
from typing import ClassVar

from rollwise_contract.matches import RequestMatch

from rollwise.api.v1alpha1 import (
    API_VERSION as MD_API_VERSION,
)
from rollwise.api.v1alpha1 import (
    KIND as MD_KIND,
)
from rollwise.api.v1alpha1 import ModelDeployment, TrafficProvider
from rollwise.plan.desired import SERVICE_PORT
from rollwise.plan.manifest import JsonValue, Manifest, annotations_of, as_dict, as_list, find
from rollwise.plan.names import Track, track_labels, track_name
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
    service_url,
    target_problems,
    with_user_hash,
)

RESOURCE = Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
API_VERSION = RESOURCE.api_version
KIND = RESOURCE.kind
EDITS = UserObject(RESOURCE, ("nginx", "ingress"))
PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
WEIGHT = PREFIX + "canary-weight"
WEIGHT_TOTAL = PREFIX + "canary-weight-total"
BY_HEADER = PREFIX + "canary-by-header"
BY_HEADER_VALUE = PREFIX + "canary-by-header-value"
BY_HEADER_PATTERN = PREFIX + "canary-by-header-pattern"
BY_COOKIE = PREFIX + "canary-by-cookie"
MIRROR_TARGET = PREFIX + "mirror-target"
COOKIE_ALWAYS = "always"
"""The only cookie value ingress-nginx routes to the canary."""


class NginxRouter:
    name: ClassVar[TrafficProvider] = TrafficProvider.NGINX
    scales_by_weight: ClassVar[bool] = False
    routes_to_tracks: ClassVar[bool] = True
    edits: ClassVar[UserObject | None] = EDITS
    owns: ClassVar[tuple[Resource, ...]] = (RESOURCE,)
    """The canary Ingress."""

    def problems(self, md: ModelDeployment) -> list[str]:
        if missing := target_problems(md.spec.rollout.traffic.nginx is not None, EDITS):
            return missing
        matches = ab_matches(md)
        out: list[str] = []
        if self.ingress_name(md) == self.canary_name(md):
            out.append(
                f"spec.rollout.traffic.nginx.ingress: {self.canary_name(md)!r} is the canary Ingress "
                "Rollwise creates for this ModelDeployment; name the Ingress that routes to Service "
                f"{md.metadata.name}"
            )
        headers = [i for i, m in enumerate(matches) if m.header is not None]
        cookies = [i for i, m in enumerate(matches) if m.cookie is not None]
        if len(headers) > 1:
            out.append(
                f"spec.rollout.abTest.match[{headers[1]}]: ingress-nginx routes one header per canary; "
                "keep one header match (use a regex to accept several values)"
            )
        if len(cookies) > 1:
            out.append(
                f"spec.rollout.abTest.match[{cookies[1]}]: ingress-nginx routes one cookie per canary; "
                "keep one cookie match"
            )
        for i in cookies:
            cookie = matches[i].cookie
            if cookie is not None and cookie.value != COOKIE_ALWAYS:
                out.append(
                    f"spec.rollout.abTest.match[{i}].cookie.value: {cookie.value!r} cannot be matched by "
                    f"ingress-nginx, which routes a cookie canary only when its value is {COOKIE_ALWAYS!r}; "
                    f"set value: {COOKIE_ALWAYS}, use a header match, or use provider gatewayAPI or istio"
                )
        return out

    def ingress_name(self, md: ModelDeployment) -> str:
        n = md.spec.rollout.traffic.nginx
        return n.ingress if n is not None else ""

    def canary_name(self, md: ModelDeployment) -> str:
        return track_name(md.metadata.name, Track.CANDIDATE)

    def refusal(self, md: ModelDeployment, main: Manifest) -> str | None:
        """Why the router may not route the user's Ingress `main`, or None: it must opt in for `md`
        and route only to `md`'s Services, since a canary and `mirror-target` act on all of it."""
        if (why := consent_refusal(md, main)) is not None:
            return why
        name = md.metadata.name
        where = object_ref(md, KIND, self.ingress_name(md))
        backends, has_path = _backends(main)
        others = sorted(set(backends) - {f"Service {s}" for s in own_services(md)})
        if others:
            return (
                f"{where} routes to {', '.join(others)}, not only to Service {name}: ingress-nginx's canary "
                "and mirror-target act on the whole Ingress, so Rollwise routes only an Ingress whose every "
                f"backend is Service {name}; give {name} an Ingress of its own"
            )
        if not has_path:
            return f"{where} has no path routing to Service {name}; add one (spec.rules[].http.paths)"
        return None

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> RouterPlan:
        stable_args = forward_args(md, split)
        main = find(live, KIND, self.ingress_name(md))
        if main is None or self.refusal(md, main) is not None:
            return RouterPlan(stable_args=stable_args)  # no canary, nothing written to the Ingress
        weight = 0 if split.sticky_header is not None else split.candidate
        annotations: dict[str, JsonValue] = {CANARY: "true", WEIGHT: str(weight), WEIGHT_TOTAL: "100"}
        annotations.update(_match_annotations(split))
        name = md.metadata.name
        meta: Manifest = {"name": self.canary_name(md)}
        if md.metadata.namespace:
            meta["namespace"] = md.metadata.namespace
        meta["labels"] = track_labels(name, Track.CANDIDATE)
        meta["annotations"] = dict(sorted(annotations.items()))
        if md.metadata.uid:
            meta["ownerReferences"] = [
                {
                    "apiVersion": MD_API_VERSION,
                    "kind": MD_KIND,
                    "name": name,
                    "uid": md.metadata.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        spec: Manifest = {}
        main_spec = main.get("spec")
        if isinstance(main_spec, dict):
            if "ingressClassName" in main_spec:
                spec["ingressClassName"] = main_spec["ingressClassName"]
            spec["rules"] = _retarget(main_spec.get("rules"), own_services(md), self.canary_name(md))
        canary: Manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}
        main_meta: Manifest = {"name": self.ingress_name(md)}
        if md.metadata.namespace:
            main_meta["namespace"] = md.metadata.namespace
        if split.mirror:
            main_meta["annotations"] = {MIRROR_TARGET: f"{service_url(md, Track.CANDIDATE)}$request_uri"}
        mirror_patch: Manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": main_meta}
        return RouterPlan(objects=(canary, mirror_patch), stable_args=stable_args)

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterReading:
        main = find(objects, KIND, self.ingress_name(md))
        if main is None:
            fix = f"create it routing to Service {md.metadata.name}"
            return not_found(md, KIND, self.ingress_name(md), fix)
        if (why := self.refusal(md, main)) is not None:
            return refused(why)
        canary = find(objects, KIND, self.canary_name(md))
        if canary is None:
            return RouterReading(None, False, f"canary Ingress {self.canary_name(md)} not created yet")
        a = annotations_of(canary)
        raw = a.get(WEIGHT, "0")
        if a.get(CANARY) != "true" or not raw.isdigit():
            return RouterReading(None, False, f"Ingress {self.canary_name(md)} is not an nginx canary")
        wanted: list[dict[str, dict[str, str]]] = []
        if BY_HEADER in a and BY_HEADER_VALUE in a:
            wanted.append({"header": {"name": a[BY_HEADER], "value": a[BY_HEADER_VALUE]}})
        elif BY_HEADER in a and BY_HEADER_PATTERN in a:
            wanted.append({"header": {"name": a[BY_HEADER], "regex": a[BY_HEADER_PATTERN]}})
        if BY_COOKIE in a:
            wanted.append({"cookie": {"name": a[BY_COOKIE], "value": COOKIE_ALWAYS}})
        read = (parsed_match(partial(RequestMatch.model_validate, w)) for w in wanted)
        matches = [m for m in read if m is not None]
        mirror = annotations_of(main).get(MIRROR_TARGET, "").startswith(service_url(md, Track.CANDIDATE))
        weight = int(raw)
        weight, header = with_user_hash(md, objects, weight)
        split = TrafficSplit(candidate=weight, mirror=mirror, matches=tuple(matches), sticky_header=header)
        return RouterReading(split, True)


def _match_annotations(split: TrafficSplit) -> dict[str, JsonValue]:
    """The canary's header and cookie conditions (`problems` allows one of each)."""
    out: dict[str, JsonValue] = {}
    for m in split.matches:
        if m.header is not None and m.header.value is not None:
            out[BY_HEADER] = m.header.name
            out[BY_HEADER_VALUE] = m.header.value
        elif m.header is not None:
            out[BY_HEADER] = m.header.name
            out[BY_HEADER_PATTERN] = m.header.regex
        elif m.cookie is not None:
            out[BY_COOKIE] = m.cookie.name
    return out


def _backends(ingress: Manifest) -> tuple[list[str], bool]:
    """Every backend of an Ingress as a message names it (`Service shop`, `resource Bucket/b`), and
    whether any path has one; `defaultBackend` counts, since a mirror would copy its requests too."""
    spec = ingress.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    found: list[JsonValue] = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    has_path = False
    for rule in as_list(spec.get("rules")):
        for path in as_list(as_dict(rule.get("http")).get("paths")):
            found.append(path.get("backend"))
            has_path = True
    return [_describe(b) for b in found], has_path


def _describe(backend: JsonValue) -> str:
    """A backend as a message names it: `Service iris`, `resource StorageBucket/static`."""
    b = as_dict(backend)
    service, resource = as_dict(b.get("service")), as_dict(b.get("resource"))
    if isinstance(name := service.get("name"), str):
        return f"Service {name}"
    return f"resource {resource.get('kind')}/{resource.get('name')}"


def _retarget(rules: JsonValue, services: Sequence[str], canary: str) -> list[JsonValue]:
    """The user's rules with every backend on one of `services` moved to `canary` (port 80)."""
    out: list[JsonValue] = []
    for original in rules if isinstance(rules, list) else []:
        rule = copy.deepcopy(original)
        http = rule.get("http") if isinstance(rule, dict) else None
        paths = http.get("paths") if isinstance(http, dict) else None
        for path in paths if isinstance(paths, list) else []:
            backend = path.get("backend") if isinstance(path, dict) else None
            svc = backend.get("service") if isinstance(backend, dict) else None
            if isinstance(svc, dict) and svc.get("name") in services and isinstance(backend, dict):
                backend["service"] = {"name": canary, "port": {"number": SERVICE_PORT}}
        out.append(rule)
    return out
