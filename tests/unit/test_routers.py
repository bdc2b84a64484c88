"""Routers: golden files of rendered objects, and render -> apply -> read round trips.

Golden files live in tests/unit/golden/routers/; after an intended change, regenerate them with
`ROLLWISE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_routers.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.plan.desired import desired_deployment, desired_services
from rollwise.plan.manifest import Manifest
from rollwise.plan.names import Track
from rollwise.plan.revision import revision_from_spec
from rollwise.plan.router import Router, RouterPlan
from rollwise.plan.split import TrafficSplit
from rollwise.routers import ROUTERS, UnknownRouterError, router_for
from rollwise_contract.matches import CookieMatch, HeaderMatch, RequestMatch

from tests.unit.manifests import base
from tests.unit.rollout_world import UID, http_route, ingress, virtual_service

GOLDEN = Path(__file__).parent / "golden" / "routers"
TRAFFIC: dict[str, dict[str, Any]] = {
    "replicas": {"provider": "replicas"},
    "gatewayAPI": {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}},
    "istio": {"provider": "istio", "istio": {"virtualService": "web", "route": "infer"}},
    "nginx": {"provider": "nginx", "nginx": {"ingress": "web"}},
}
USER: dict[str, list[Manifest]] = {
    "replicas": [],
    "gatewayAPI": [http_route()],
    "istio": [virtual_service()],
    "nginx": [ingress()],
}


def md_for(provider: str) -> ModelDeployment:
    doc = base()
    doc["metadata"]["uid"] = UID
    doc["spec"]["rollout"] = {"canary": {"steps": [{"setWeight": 10}]}, "traffic": TRAFFIC[provider]}
    return ModelDeployment.model_validate(doc)


def live_after(
    md: ModelDeployment, router: Router, routing: RouterPlan, user: list[Manifest]
) -> list[Manifest]:
    """What the cluster holds once kube/ applied the routing (SSA of our fields, ready pods)."""
    children: list[Manifest] = []
    for track, args in ((Track.STABLE, routing.stable_args), (Track.CANDIDATE, routing.candidate_args)):
        dep = desired_deployment(
            md, track=track, revision=revision_from_spec(md), replicas=2, owner_uid=UID,
            serving_image="img", extra_args=args,
        )  # fmt: skip
        dep["metadata"]["generation"] = 1  # type: ignore[index]
        dep["status"] = {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}
        children.append(dep)
    children += desired_services(
        md, owner_uid=UID, main_track=routing.main_track, main_annotations=dict(routing.main_annotations)
    )
    live = {(u["kind"], u["metadata"]["name"]): json.loads(json.dumps(u)) for u in user}  # type: ignore[index]
    for obj in routing.objects:
        k = (obj["kind"], obj["metadata"]["name"])  # type: ignore[index]
        if k in live:
            target = live[k]
            target.setdefault("spec", {}).update(obj.get("spec") or {})  # type: ignore[union-attr, arg-type]
            ann = target["metadata"].setdefault("annotations", {})  # type: ignore[union-attr]
            ann.pop("nginx.ingress.kubernetes.io/mirror-target", None)
            ann.update(obj["metadata"].get("annotations") or {})  # type: ignore[union-attr]
        else:
            live[k] = obj
    return [*children, *live.values()]


SPLITS = {
    "at-rest": TrafficSplit.stable_only(),
    "weight-25": TrafficSplit(25),
    "mirror": TrafficSplit(0, mirror=True),
    "header-match": TrafficSplit(0, matches=(RequestMatch(header=HeaderMatch(name="x-variant", value="b")),)),
    "user-hash-20": TrafficSplit(20, sticky_header="x-user-id"),
}


@pytest.mark.parametrize("provider", list(TRAFFIC))
@pytest.mark.parametrize("case", list(SPLITS))
def test_rendered_objects_match_the_golden_file(provider: str, case: str) -> None:
    md = md_for(provider)
    router = router_for(provider)
    split = SPLITS[case]
    routing = router.render(md, split, USER[provider])
    got = json.dumps(
        {
            "objects": list(routing.objects),
            "mainTrack": routing.main_track,
            "mainAnnotations": dict(routing.main_annotations),
            "stableArgs": list(routing.stable_args),
            "candidateArgs": list(routing.candidate_args),
        },
        indent=2,
        sort_keys=True,
    )
    path = GOLDEN / f"{provider}-{case}.json"
    if os.environ.get("ROLLWISE_UPDATE_GOLDEN"):
        path.write_text(got + "\n")
    assert path.exists(), f"{path} missing: run with ROLLWISE_UPDATE_GOLDEN=1 and review it"
    assert got + "\n" == path.read_text()


def _header(name: str, value: str) -> RequestMatch:
    return RequestMatch(header=HeaderMatch(name=name, value=value))


def _regex(name: str, regex: str) -> RequestMatch:
    return RequestMatch(header=HeaderMatch(name=name, regex=regex))


def _cookie(name: str, value: str) -> RequestMatch:
    return RequestMatch(cookie=CookieMatch(name=name, value=value))


matches = st.lists(
    st.one_of(
        st.builds(_header, st.sampled_from(["x-a", "x-b"]), st.text("abc.*", min_size=1, max_size=5)),
        st.builds(_regex, st.sampled_from(["x-c"]), st.sampled_from(["^b.*", "v[0-9]+"])),
        st.builds(_cookie, st.sampled_from(["beta", "s.id"]), st.sampled_from(["always", "on", "a+b"])),
    ),
    max_size=2,
    unique=True,
)


@st.composite
def splits(draw: st.DrawFn) -> TrafficSplit:
    kind = draw(st.sampled_from(["weight", "mirror", "match", "hash"]))
    if kind == "weight":
        return TrafficSplit(draw(st.integers(0, 100)))
    if kind == "mirror":
        return TrafficSplit(0, mirror=True)
    if kind == "match":
        return TrafficSplit(0, matches=tuple(draw(matches)))
    return TrafficSplit(draw(st.integers(1, 99)), sticky_header="x-user-id")


def supported(provider: str, split: TrafficSplit) -> bool:
    """What each provider can express (the rest is refused by `problems`)."""
    if provider == "nginx":
        headers = [m for m in split.matches if m.header is not None]
        cookies = [m for m in split.matches if m.cookie is not None]
        return (
            len(headers) <= 1
            and len(cookies) <= 1
            and all(c.cookie.value == "always" for c in cookies if c.cookie)
        )
    return True


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(TRAFFIC)), splits(), splits())
def test_render_then_read_gives_the_split_back_even_over_an_earlier_render(
    provider: str, earlier: TrafficSplit, split: TrafficSplit
) -> None:
    md, router = md_for(provider), router_for(provider)
    if not (supported(provider, split) and supported(provider, earlier)):
        return
    first = live_after(md, router, router.render(md, earlier, USER[provider]), USER[provider])
    user_now = [
        o
        for o in first
        if o["kind"] in ("HTTPRoute", "VirtualService")
        or (o["kind"] == "Ingress" and o["metadata"]["name"] == "web")
    ]  # type: ignore[index]
    routing = router.render(md, split, user_now)
    state = router.read(md, live_after(md, router, routing, user_now))
    assert state.accepted, state.message
    assert state.carries(split), (state.split, split)
    # Rendering again from what is live is stable: the route does not grow on each pass.
    assert router.render(md, split, user_now).objects == routing.objects


@pytest.mark.parametrize(
    "split",
    [
        TrafficSplit(20, sticky_header="x-user-id"),
        TrafficSplit(0, matches=(RequestMatch(header=HeaderMatch(name="x-v", value="b")),)),
        TrafficSplit(0, mirror=True),
    ],
    ids=["user-hash", "match", "mirror"],
)
def test_replicas_routing_flags_are_in_effect_only_once_old_stable_pods_are_gone(split: TrafficSplit) -> None:
    """Terminating stable pods (preStop keeps them serving) lack the flags: not yet routed."""
    md, router = md_for("replicas"), router_for("replicas")
    live = live_after(md, router, router.render(md, split, []), [])
    assert router.read(md, live).carries(split)
    stable = next(o for o in live if o["metadata"]["name"] == "iris-stable")  # type: ignore[index]
    stable["status"]["terminatingReplicas"] = 1  # type: ignore[index]
    state = router.read(md, live)
    assert not state.accepted and state.message == "waiting for old iris-stable pods to terminate"
    # A plain weight does not depend on the stable pods' flags.
    weighted = live_after(md, router, router.render(md, TrafficSplit(20), []), [])
    next(o for o in weighted if o["metadata"]["name"] == "iris-stable")["status"]["terminatingReplicas"] = 1  # type: ignore[index]
    assert router.read(md, weighted).carries(TrafficSplit(20))


def test_the_users_other_rules_and_routes_are_kept() -> None:
    md = md_for("gatewayAPI")
    route = router_for("gatewayAPI").render(md, TrafficSplit(30), [http_route()]).objects[0]
    rules = route["spec"]["rules"]  # type: ignore[index]
    assert rules[0] == http_route()["spec"]["rules"][0]  # type: ignore[index]
    assert set(route) == {"apiVersion", "kind", "metadata", "spec"} and set(route["spec"]) == {"rules"}  # type: ignore[arg-type]
    vs = router_for("istio").render(md_for("istio"), TrafficSplit(30), [virtual_service()]).objects[0]
    assert vs["spec"]["http"][0] == virtual_service()["spec"]["http"][0]  # type: ignore[index]


def test_a_missing_user_object_renders_nothing_and_reads_as_missing() -> None:
    for provider in ("gatewayAPI", "istio", "nginx"):
        md, router = md_for(provider), router_for(provider)
        assert router.render(md, TrafficSplit(10), []).objects == ()
        state = router.read(md, [])
        assert state.split is None and not state.accepted and "not found in namespace ml" in state.message


def test_a_route_rejected_by_its_gateway_is_not_accepted() -> None:
    md = md_for("gatewayAPI")
    route = http_route()
    route["status"] = {
        "parents": [
            {
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "False",
                        "reason": "NotAllowedByListeners",
                        "message": "no listener",
                        "observedGeneration": 1,
                    }
                ]
            }
        ]
    }
    state = router_for("gatewayAPI").read(md, [route])
    assert (
        not state.accepted and state.message == "HTTPRoute not accepted: NotAllowedByListeners: no listener"
    )


NGINX_COOKIE = (
    "spec.rollout.abTest.match[0].cookie.value: 'yes' cannot be matched by ingress-nginx, which routes "
    "a cookie canary only when its value is 'always'; set value: always, use a header match, or use "
    "provider gatewayAPI or istio"
)
NGINX_HEADERS = (
    "spec.rollout.abTest.match[1]: ingress-nginx routes one header per canary; keep one header match "
    "(use a regex to accept several values)"
)
TWO_HEADERS = [{"header": {"name": "a", "value": "1"}}, {"header": {"name": "b", "value": "2"}}]


@pytest.mark.parametrize(
    ("provider", "ab", "problem"),
    [
        pytest.param(
            "nginx", {"match": [{"cookie": {"name": "beta", "value": "yes"}}]}, NGINX_COOKIE,
            id="nginx refuses cookie values other than always",
        ),
        pytest.param("nginx", {"match": TWO_HEADERS}, NGINX_HEADERS, id="nginx refuses two header matches"),
    ],
)  # fmt: skip
def test_what_a_router_cannot_do_is_an_error_naming_the_field(
    provider: str, ab: dict[str, Any], problem: str
) -> None:
    doc = base()
    doc["spec"]["rollout"] = {"abTest": ab, "traffic": TRAFFIC[provider]}
    assert router_for(provider).problems(ModelDeployment.model_validate(doc)) == [problem]


def test_an_unknown_provider_is_an_error_not_a_fallback() -> None:
    with pytest.raises(
        UnknownRouterError,
        match=r"spec.rollout.traffic.provider: 'linkerd' is not a traffic router; "
        r"use one of gatewayAPI, istio, nginx, replicas",
    ):
        router_for("linkerd")
    assert sorted(ROUTERS) == ["gatewayAPI", "istio", "nginx", "replicas"]


@pytest.mark.parametrize("provider", ["gatewayAPI", "istio", "nginx"])
def test_a_header_match_spelled_in_capitals_is_read_back_as_routed(provider: str) -> None:
    """Istio stores header names lower-cased; found on the real API server (the A/B step waited
    forever for `X-Model-Variant`, which its VirtualService already routed)."""
    doc = base()
    doc["metadata"]["uid"] = UID
    match = {"header": {"name": "X-Model-Variant", "regex": "b|c"}}
    doc["spec"]["rollout"] = {"abTest": {"match": [match]}, "traffic": TRAFFIC[provider]}
    md, router = ModelDeployment.model_validate(doc), router_for(provider)
    split = TrafficSplit(0, matches=(RequestMatch.model_validate(match),))
    state = router.read(md, live_after(md, router, router.render(md, split, USER[provider]), USER[provider]))
    assert state.carries(split), state.split
