"""Routers: golden files of rendered objects, and render -> apply -> read round trips.

Golden files live in tests/unit/golden/routers/; after an intended change, regenerate them with
`ROLLWISE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_routers.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rollwise.api.v1alpha1 import ModelDeployment, Phase
from rollwise.plan.desired import desired_deployment, desired_services
from rollwise.plan.manifest import Manifest, name_of
from rollwise.plan.names import Track
from rollwise.plan.revision import revision_from_spec
from rollwise.plan.router import Router, RouterPlan
from rollwise.plan.split import TrafficSplit
from rollwise.routers import ROUTERS, UnknownRouterError, router_for
from rollwise.routers.common import TRAFFIC_FOR
from rollwise_contract.matches import CookieMatch, HeaderMatch, RequestMatch

from tests.unit.manifests import base
from tests.unit.rollout_world import UID, World, at, http_route, ingress, virtual_service

REPO = Path(__file__).resolve().parents[2]
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


@pytest.mark.parametrize(("seen", "accepted"), [(1, False), (2, True), (3, True)])
def test_a_step_on_a_route_waits_for_its_gateway_to_accept_the_written_generation(
    seen: int, accepted: bool
) -> None:
    """Our write read back is not proof the gateway routes it: its status for the route's current
    generation is (Traefik writes it once it has loaded that generation)."""
    md = md_for("gatewayAPI")
    route = http_route()
    route["metadata"]["generation"] = 2
    route["status"] = {
        "parents": [
            {
                "parentRef": {"name": "models"},
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": seen}
                ],
            }
        ]
    }
    state = router_for("gatewayAPI").read(md, [route])
    assert state.accepted is accepted
    if not accepted:
        assert state.message == (
            "HTTPRoute generation 2 not yet accepted by Gateway models (its status is for generation 1)"
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


@pytest.mark.parametrize("provider", ["gatewayAPI", "istio", "nginx"])
def test_a_users_edit_to_a_regex_the_api_would_refuse_reads_as_not_ours_not_a_crash(provider: str) -> None:
    """A lookahead is not RE2, so `HeaderMatch` refuses it: read off a live object it must mean "a
    match that is not ours" (the step re-applies), not an exception that fails every pass."""
    doc = base()
    doc["metadata"]["uid"] = UID
    match = {"header": {"name": "x-variant", "regex": "b|c"}}
    doc["spec"]["rollout"] = {"abTest": {"match": [match]}, "traffic": TRAFFIC[provider]}
    md, router = ModelDeployment.model_validate(doc), router_for(provider)
    split = TrafficSplit(0, matches=(RequestMatch.model_validate(match),))
    live = live_after(md, router, router.render(md, split, USER[provider]), USER[provider])
    edited = json.loads(json.dumps(live).replace('"b|c"', '"(?=b)c"'))
    assert edited != live
    state = router.read(md, edited)
    assert not state.carries(split)


# Consent and scope: whose route object a ModelDeployment may edit ---------------------------------


def only(objects: Sequence[Manifest]) -> Any:
    """The one rendered object (as `Any`, to be read like JSON)."""
    assert len(objects) == 1, objects
    return objects[0]


def md_with(provider: str, **target: str) -> ModelDeployment:
    """`md_for` with the spec naming another user object (e.g. `virtualService="shop"`)."""
    doc = base()
    doc["metadata"]["uid"] = UID
    block = {**TRAFFIC[provider][provider], **target}
    if provider == "istio" and "route" not in target:
        block.pop("route")
    traffic = {"provider": provider, provider: block}
    doc["spec"]["rollout"] = {"canary": {"steps": [{"setWeight": 10}]}, "traffic": traffic}
    return ModelDeployment.model_validate(doc)


NOT_OPTED_IN = (
    "{kind} ml/web is not opted in (no rollwise.dev/traffic-for annotation), so nothing is written to "
    "it; annotate {kind} ml/web with rollwise.dev/traffic-for=iris to let this ModelDeployment route it"
)
OPTED_IN_FOR_SHOP = (
    "{kind} ml/web is opted in for ModelDeployment 'shop' (rollwise.dev/traffic-for=shop), not this "
    "one, so nothing is written to it; annotate {kind} ml/web with rollwise.dev/traffic-for=iris to "
    "let this ModelDeployment route it"
)
USER_OF: dict[str, Any] = {"gatewayAPI": http_route, "istio": virtual_service, "nginx": ingress}
KIND_OF = {"gatewayAPI": "HTTPRoute", "istio": "VirtualService", "nginx": "Ingress"}


def test_the_consent_annotation_is_the_one_the_docs_and_examples_use() -> None:
    assert TRAFFIC_FOR == "rollwise.dev/traffic-for"
    assert f"{TRAFFIC_FOR}: <name>" in (REPO / "docs" / "routers.md").read_text()
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if all(d["kind"] == "ModelBatchJob" for d in docs):
            continue  # a batch job routes no traffic
        (md,) = [d for d in docs if d["kind"] == "ModelDeployment"]
        for user in (d for d in docs if d is not md):
            assert user["metadata"]["annotations"][TRAFFIC_FOR] == md["metadata"]["name"], path.name


@pytest.mark.parametrize("case", list(SPLITS))
@pytest.mark.parametrize(
    ("traffic_for", "message"),
    [
        pytest.param(None, NOT_OPTED_IN, id="an object without the annotation"),
        pytest.param("shop", OPTED_IN_FOR_SHOP, id="an object opted in for another ModelDeployment"),
        pytest.param(
            "", OPTED_IN_FOR_SHOP.replace("'shop'", "''").replace("=shop", "="), id="an empty value"
        ),
        pytest.param("Iris", OPTED_IN_FOR_SHOP.replace("shop", "Iris"), id="a name that differs in case"),
    ],
)
@pytest.mark.parametrize("provider", ["gatewayAPI", "istio", "nginx"])
def test_a_user_object_not_opted_in_for_this_md_is_never_written_and_reads_as_not_routing(
    provider: str, traffic_for: str | None, message: str, case: str
) -> None:
    md, router = md_for(provider), router_for(provider)
    user = USER_OF[provider](traffic_for=traffic_for)
    routing = router.render(md, SPLITS[case], [user])
    assert routing.objects == ()  # no route edit, no canary Ingress, no mirror-target
    reading = router.read(md, live_after(md, router, routing, [user]))
    assert (reading.split, reading.accepted) == (None, False)
    assert reading.message == message.format(kind=KIND_OF[provider])


@pytest.mark.parametrize("provider", ["gatewayAPI", "istio", "nginx"])
@pytest.mark.parametrize("case", list(SPLITS))
def test_the_applied_object_holds_only_the_fields_rollwise_owns(provider: str, case: str) -> None:
    """Server-side apply with force takes every field sent: so only what Rollwise must own is sent
    (never the consent annotation, which would then stay ours after the user removed it)."""
    md, router = md_for(provider), router_for(provider)
    routing = router.render(md, SPLITS[case], USER[provider])
    user: Any = next(o for o in routing.objects if name_of(o) == "web")
    assert set(user) == {"apiVersion", "kind", "metadata", "spec"} - (
        {"spec"} if provider == "nginx" else set()
    )
    meta = user["metadata"]
    expected_meta = {"name", "namespace"} | (
        {"annotations"} if provider == "nginx" and case == "mirror" else set()
    )
    assert set(meta) == expected_meta
    if provider == "nginx" and case == "mirror":
        assert set(meta["annotations"]) == {"nginx.ingress.kubernetes.io/mirror-target"}
    if provider != "nginx":
        assert set(user["spec"]) == {"rules" if provider == "gatewayAPI" else "http"}


def shop_virtual_service(*, iris_host: str = "iris") -> dict[str, Any]:
    """A VirtualService serving a shop (route `main`) that also routes /predict to iris."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "ml", "annotations": {TRAFFIC_FOR: "iris"}},
        "spec": {
            "hosts": ["shop.example"],
            "gateways": ["public"],
            "http": [
                {
                    "name": "main",
                    "match": [{"uri": {"prefix": "/"}}],
                    "route": [{"destination": {"host": "shop", "port": {"number": 8080}}, "weight": 100}],
                    "headers": {"request": {"set": {"x-shop": "1"}}},
                },
                {
                    "name": "predict",
                    "match": [{"uri": {"prefix": "/predict"}}],
                    "route": [{"destination": {"host": iris_host}}],
                },
            ],
        },
    }


@pytest.mark.parametrize("host", ["iris", "iris.ml", "iris.ml.svc", "iris.ml.svc.cluster.local"])
@pytest.mark.parametrize("route", [None, "predict"], ids=["first route of ours", "named route"])
@pytest.mark.parametrize("case", list(SPLITS))
def test_istio_edits_only_the_route_to_the_md_and_leaves_the_shops_route_byte_for_byte(
    host: str, route: str | None, case: str
) -> None:
    md = md_with("istio", virtualService="shop", **({"route": route} if route else {}))
    router = router_for("istio")
    vs = shop_virtual_service(iris_host=host)
    before = json.dumps(vs["spec"]["http"][0], sort_keys=True)
    obj = only(router.render(md, SPLITS[case], [vs]).objects)
    http = obj["spec"]["http"]
    assert json.dumps(http[0], sort_keys=True) == before  # `main` first, untouched
    edited = [r for r in http if r["name"] == "predict"]
    assert [d["destination"]["host"] for d in edited[0]["route"]] == [
        "iris-stable.ml.svc.cluster.local",
        "iris-candidate.ml.svc.cluster.local",
    ]
    assert all(r["name"] == "main" or "iris" in json.dumps(r) for r in http)
    live = live_after(md, router, router.render(md, SPLITS[case], [vs]), [vs])
    assert router.read(md, live).carries(SPLITS[case])


ROUTE_MAIN_REFUSED = (
    "HTTP route main of VirtualService ml/shop routes to shop, not only to this ModelDeployment's "
    "Services (iris, iris-stable, iris-candidate), so Rollwise will not edit it; set "
    "spec.rollout.traffic.istio.route to a route whose every destination is iris"
)


@pytest.mark.parametrize(
    ("http", "route", "message"),
    [
        pytest.param(None, "main", ROUTE_MAIN_REFUSED, id="a named route to another service"),
        pytest.param(
            [{"name": "main", "route": [
                {"destination": {"host": "iris"}, "weight": 90},
                {"destination": {"host": "shop"}, "weight": 10},
            ]}],
            "main",
            ROUTE_MAIN_REFUSED.replace("routes to shop", "routes to iris, shop"),
            id="a named route that splits between iris and another service",
        ),
        pytest.param(
            [{"name": "main", "route": [{"destination": {"host": "iris.shop.svc.cluster.local"}}]}],
            "main",
            ROUTE_MAIN_REFUSED.replace("routes to shop", "routes to iris.shop.svc.cluster.local"),
            id="a named route to a Service of the same name in another namespace",
        ),
        pytest.param(
            [{"name": "main", "delegate": {"name": "shop-routes"}}],
            "main",
            ROUTE_MAIN_REFUSED.replace("routes to shop", "routes to no destination"),
            id="a named delegate route",
        ),
        pytest.param(
            None,
            "nope",
            "VirtualService ml/shop has no HTTP route named nope; name one of its HTTP routes in "
            "spec.rollout.traffic.istio.route",
            id="a route name the VirtualService does not have",
        ),
        pytest.param(
            [{"name": "main", "route": [{"destination": {"host": "shop"}}]}],
            None,
            "VirtualService ml/shop has no HTTP route whose destinations are all this ModelDeployment's "
            "Services (iris, iris-stable, iris-candidate); add one routing to iris, or name it in "
            "spec.rollout.traffic.istio.route",
            id="no route names the md's Services",
        ),
    ],
)  # fmt: skip
def test_istio_refuses_a_route_that_is_not_the_mds(
    http: list[Any] | None, route: str | None, message: str
) -> None:
    md = md_with("istio", virtualService="shop", **({"route": route} if route else {}))
    router = router_for("istio")
    vs = shop_virtual_service()
    if http is not None:
        vs["spec"]["http"] = http
    assert router.render(md, TrafficSplit(100, mirror=True), [vs]).objects == ()
    reading = router.read(md, [vs])
    assert (reading.split, reading.accepted, reading.message) == (None, False, message)


def test_istio_keeps_a_users_route_that_only_shares_our_ab_prefix() -> None:
    md = md_with("istio", virtualService="shop", route="predict")
    vs = shop_virtual_service()
    lookalike = {"name": "rollwise-iris-candidate-0", "route": [{"destination": {"host": "shop"}}]}
    vs["spec"]["http"].insert(0, lookalike)
    split = TrafficSplit(0, matches=(_header("x-variant", "b"),))
    obj = only(router_for("istio").render(md, split, [vs]).objects)
    assert obj["spec"]["http"][0] == lookalike


def shop_http_route(*rules: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "ml", "annotations": {TRAFFIC_FOR: "iris"}},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": list(rules)},
    }


SHOP_RULE = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
    "backendRefs": [{"name": "shop", "port": 8080, "weight": 7}],
    "filters": [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
    ],
}
IRIS_RULE = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
    "backendRefs": [{"name": "iris", "port": 80}],
}


@pytest.mark.parametrize("case", list(SPLITS))
def test_gateway_api_edits_only_the_rules_to_the_mds_services(case: str) -> None:
    md, router = md_for("gatewayAPI"), router_for("gatewayAPI")
    route = shop_http_route(
        SHOP_RULE,
        IRIS_RULE,
        {**SHOP_RULE, "backendRefs": [{"name": "iris", "namespace": "shop", "port": 80}]},
    )
    obj = only(router.render(md, SPLITS[case], [route]).objects)
    rules = obj["spec"]["rules"]
    assert rules[0] == SHOP_RULE
    assert rules[-1] == route["spec"]["rules"][2]  # iris in namespace shop: not ours
    backends = {b["name"] for r in rules[1:-1] for b in r["backendRefs"]}
    assert backends <= {"iris-stable", "iris-candidate"}
    live = live_after(md, router, router.render(md, SPLITS[case], [route]), [route])
    assert router.read(md, live).carries(SPLITS[case])


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param(
            [SHOP_RULE, {**IRIS_RULE, "backendRefs": [{"name": "iris", "port": 80}, {"name": "shop"}]}],
            "HTTPRoute ml/web spec.rules[1] routes to Service shop as well as to Service iris: Rollwise "
            "splits only a rule whose every backend is this ModelDeployment's Service; give iris a rule of "
            "its own",
            id="a rule that splits between iris and another service",
        ),
        pytest.param(
            [SHOP_RULE, {**IRIS_RULE, "backendRefs": [{"name": "iris", "namespace": "shop", "port": 80}]}],
            "HTTPRoute ml/web has no rule routing to Service iris; add a rule with backendRefs: "
            "[{name: iris, port: 80}]",
            id="a Service named iris in another namespace",
        ),
        pytest.param(
            [{**IRIS_RULE, "backendRefs": [{"group": "example.com", "kind": "Service", "name": "iris"}]}],
            "HTTPRoute ml/web has no rule routing to Service iris; add a rule with backendRefs: "
            "[{name: iris, port: 80}]",
            id="a backend of another API group named Service iris",
        ),
    ],
)  # fmt: skip
def test_gateway_api_refuses_a_route_with_no_rule_of_its_own(rules: list[Any], message: str) -> None:
    md, router = md_for("gatewayAPI"), router_for("gatewayAPI")
    route = shop_http_route(*rules)
    assert router.render(md, TrafficSplit(50, mirror=True), [route]).objects == ()
    reading = router.read(md, [route])
    assert (reading.split, reading.accepted, reading.message) == (None, False, message)


def shop_ingress(*backends: str, default: str | None = None) -> dict[str, Any]:
    paths = [
        {"path": f"/{b}", "pathType": "Prefix", "backend": {"service": {"name": b, "port": {"number": 80}}}}
        for b in backends
    ]
    spec: dict[str, Any] = {
        "ingressClassName": "nginx",
        "rules": [{"host": "shop.example", "http": {"paths": paths}}],
    }
    if default is not None:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "ml", "annotations": {TRAFFIC_FOR: "iris"}},
        "spec": spec,
    }


NGINX_SHARED = (
    "Ingress ml/web routes to {others}, not only to Service iris: ingress-nginx's canary and mirror-target "
    "act on the whole Ingress, so Rollwise routes only an Ingress whose every backend is Service iris; "
    "give iris an Ingress of its own"
)


@pytest.mark.parametrize(
    ("user", "message"),
    [
        pytest.param(
            shop_ingress("shop"), NGINX_SHARED.format(others="Service shop"),
            id="an Ingress to another service",
        ),
        pytest.param(
            shop_ingress("iris", "shop", "cart"), NGINX_SHARED.format(others="Service cart, Service shop"),
            id="an Ingress to iris and to other services",
        ),
        pytest.param(
            shop_ingress("iris", default="shop"), NGINX_SHARED.format(others="Service shop"),
            id="an Ingress whose default backend is another service",
        ),
        pytest.param(
            shop_ingress(default="iris"),
            "Ingress ml/web has no path routing to Service iris; add one (spec.rules[].http.paths)",
            id="an Ingress with a default backend only",
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("case", ["mirror", "weight-25", "header-match"])
def test_nginx_refuses_an_ingress_that_routes_anything_but_the_mds_service(
    user: dict[str, Any], message: str, case: str
) -> None:
    md, router = md_for("nginx"), router_for("nginx")
    assert router.render(md, SPLITS[case], [user]).objects == ()  # no canary, no mirror-target
    reading = router.read(md, [user])
    assert (reading.split, reading.accepted, reading.message) == (None, False, message)


def test_nginx_refuses_to_name_its_own_canary_as_the_users_ingress() -> None:
    md = md_with("nginx", ingress="iris-candidate")
    assert router_for("nginx").problems(md) == [
        "spec.rollout.traffic.nginx.ingress: 'iris-candidate' is the canary Ingress Rollwise creates for "
        "this ModelDeployment; name the Ingress that routes to Service iris"
    ]


def test_a_rollout_through_a_route_not_opted_in_shows_the_fix_and_rolls_back_writing_nothing() -> None:
    """The reading's message is what the user sees: while the step waits and in the rollback."""
    doc = base()
    doc["metadata"]["uid"] = UID
    doc["spec"]["runtime"] = {"replicas": 4}
    doc["spec"]["rollout"] = {
        "canary": {"steps": [{"setWeight": 10}]},
        "traffic": TRAFFIC["gatewayAPI"],
        "progressDeadlineSeconds": 60,
    }
    route = http_route(traffic_for=None)
    w = World.of(ModelDeployment.model_validate(doc), route)
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    w.with_spec(spec__model__version="2.0.0")
    w.settle(at(1))  # the step starts; the deadline runs from here
    fix = NOT_OPTED_IN.format(kind="HTTPRoute")
    d = w.settle(at(60))
    assert d.status.phase is Phase.PROGRESSING
    assert d.status.message == f"step 1/1: setWeight 10; waiting for the traffic router: {fix}"
    d = w.settle(at(61))
    assert d.status.phase is Phase.ROLLED_BACK and fix in (d.status.message or "")
    assert d.status.stable_version == "1.0.0"
    assert w.user[("HTTPRoute", "web")] == route  # never written
    assert all(m["kind"] != "HTTPRoute" for m in d.desired)


@pytest.mark.parametrize(
    "earlier", [TrafficSplit(0, mirror=True), TrafficSplit(25)], ids=["mirror", "weight"]
)
def test_gateway_api_mirroring_by_pods_leaves_the_route_without_a_filter(earlier: TrafficSplit) -> None:
    """For a gateway without RequestMirror (Traefik answers 500 for a rule with a filter it lacks),
    the stable pods copy requests and the route carries weights only; the mirror reads back from
    the stable pods' flags, and ends with them."""
    md, router = md_with("gatewayAPI", mirroring="pods"), router_for("gatewayAPI")
    user = USER["gatewayAPI"]
    first = live_after(md, router, router.render(md, earlier, user), user)
    route_now = [o for o in first if o["kind"] == "HTTPRoute"]
    shadow = router.render(md, TrafficSplit(0, mirror=True), route_now)
    assert "--mirror-url" in shadow.stable_args
    assert "RequestMirror" not in json.dumps(shadow.objects)
    state = router.read(md, live_after(md, router, shadow, route_now))
    assert state.accepted and state.split is not None and state.split.mirror, state
    ended = router.render(md, TrafficSplit.stable_only(), route_now)
    assert "--mirror-url" not in ended.stable_args
    after = router.read(md, live_after(md, router, ended, route_now))
    assert after.split is not None and not after.split.mirror
