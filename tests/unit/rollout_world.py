"""A perfect world for planner tests: applies a Decision the way kube/ would and reports it back.

Deployments become ready at once (unless a track is told to crash), server-side apply of router
objects is imitated field by field, and `observe` builds the `Observed` snapshot from the result
through `rollwise.kube.observe`, so the planner sees exactly the shape it sees in a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.kube.observe import child_view, observe
from rollwise.plan.analysis import Measured
from rollwise.plan.decision import Decision
from rollwise.plan.jobs import ObservedPod, PodPhase
from rollwise.plan.machine import decide
from rollwise.plan.manifest import JsonValue, Manifest
from rollwise.plan.observed import Observed, WebhookResult
from rollwise.plan.router import Router
from rollwise.routers import router_for
from rollwise.routers.common import TRAFFIC_FOR

UID = "0b5c1a7e-1111-4222-8333-444455556666"
IMAGE = "rollwise-serving:test"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
USER_OWNED = {"HTTPRoute", "VirtualService"}


def key(m: Manifest) -> tuple[str, str]:
    meta = m["metadata"]
    assert isinstance(meta, dict)
    return (str(m["kind"]), str(meta["name"]))


def opted_in(traffic_for: str | None) -> dict[str, JsonValue]:
    """A user object's consent annotation (`rollwise.dev/traffic-for`), or none."""
    return {} if traffic_for is None else {TRAFFIC_FOR: traffic_for}


def http_route(name: str = "web", service: str = "iris", traffic_for: str | None = "iris") -> Manifest:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "ml", "generation": 1, "annotations": opted_in(traffic_for)},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                    "backendRefs": [{"name": "docs", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                    "backendRefs": [{"name": service, "port": 80}],
                },
            ],
        },
    }


def virtual_service(name: str = "web", service: str = "iris", traffic_for: str | None = "iris") -> Manifest:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "ml", "annotations": opted_in(traffic_for)},
        "spec": {
            "hosts": ["iris.example"],
            "http": [
                {
                    "name": "docs",
                    "match": [{"uri": {"prefix": "/docs"}}],
                    "route": [{"destination": {"host": "docs"}}],
                },
                {"name": "infer", "route": [{"destination": {"host": f"{service}.ml.svc.cluster.local"}}]},
            ],
        },
    }


def ingress(name: str = "web", service: str = "iris", traffic_for: str | None = "iris") -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "ml", "annotations": {"team": "ml", **opted_in(traffic_for)}},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": "iris.example",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": service, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def _ready(deployment: Manifest, *, crash: bool) -> Manifest:
    out = copy.deepcopy(deployment)
    meta = out["metadata"]
    assert isinstance(meta, dict)
    spec = out["spec"]
    assert isinstance(spec, dict)
    replicas = spec.get("replicas", 2)
    assert isinstance(replicas, int)
    meta["generation"] = 1
    available = 0 if crash else replicas
    out["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "message": "CrashLoopBackOff" if crash else "",
            }
        ],
    }
    return out


def _merge_user_object(live: Manifest, rendered: Manifest) -> Manifest:
    """Server-side apply of our partial object onto the user's: our fields replace theirs."""
    out = copy.deepcopy(live)
    spec = out.setdefault("spec", {})
    assert isinstance(spec, dict)
    rendered_spec = rendered.get("spec")
    if isinstance(rendered_spec, dict):
        spec.update(copy.deepcopy(rendered_spec))
    return out


@dataclass
class World:
    """Live objects, keyed by (kind, name), and the knobs tests turn."""

    md: ModelDeployment
    router: Router
    children: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    user: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    crash_candidate: bool = False
    crash_stable: bool = False
    backtest_pods: list[ObservedPod] = field(default_factory=list)
    """The backtest Job's pods as `kube/` lists them once the Job ended (`finish_job`)."""

    @classmethod
    def of(cls, md: ModelDeployment, *user: Manifest) -> World:
        return cls(md=md, router=router_for(md.spec.rollout.traffic.provider), user={key(u): u for u in user})

    def observed(
        self, measurements: Sequence[Measured] = (), webhooks: Sequence[WebhookResult] = ()
    ) -> Observed:
        base = observe(list(self.children.values()), owner_uid=UID)
        return Observed(
            stable=base.stable,
            candidate=base.candidate,
            children=base.children,
            router_objects=tuple(self.user.values()),
            measurements=tuple(measurements),
            webhooks=tuple(webhooks),
            backtest_jobs=base.backtest_jobs,
            backtest_pods=tuple(self.backtest_pods),
        )

    def finish_job(self, name: str, *, messages: Sequence[str], failed: bool = False) -> None:
        """The Job `name` ends (Complete, or Failed), one pod per index with its termination message."""
        job = self.children[("Job", name)]
        condition = "Failed" if failed else "Complete"
        job["status"] = {
            "conditions": [{"type": condition, "status": "True", "message": "BackoffLimitExceeded"}],
            "completedIndexes": "" if failed else f"0-{len(messages) - 1}",
            "failedIndexes": "0" if failed else "",
        }
        phase = PodPhase.FAILED if failed else PodPhase.SUCCEEDED
        self.backtest_pods = [
            ObservedPod(f"{name}-{i}", i, phase, T0, exit_code=3 if failed else 0, message=m, job=name)
            for i, m in enumerate(messages)
        ]

    def plan(
        self, now: datetime, measurements: Sequence[Measured] = (), webhooks: Sequence[WebhookResult] = ()
    ) -> Decision:
        return decide(
            self.md,
            self.observed(measurements, webhooks),
            now=now,
            owner_uid=UID,
            serving_image=IMAGE,
            router=self.router,
        )

    def apply(self, decision: Decision) -> None:
        """Apply desired objects, delete, write the status (as kube/reconcile.py does). Children are
        kept as the operator's index keeps them (`child_view`), so every scenario also proves the
        view holds all the planner and routers read."""
        for m in decision.desired:
            k = key(m)
            if k in self.user and m["kind"] in USER_OWNED:
                self.user[k] = _merge_user_object(self.user[k], m)
            elif k in self.user:  # the user's Ingress: we own only the mirror-target annotation
                live = copy.deepcopy(self.user[k])
                annotations = live["metadata"].setdefault("annotations", {})  # type: ignore[union-attr]
                assert isinstance(annotations, dict)
                annotations.pop("nginx.ingress.kubernetes.io/mirror-target", None)
                ours = m["metadata"].get("annotations") or {}  # type: ignore[union-attr]
                assert isinstance(ours, dict)
                annotations.update(ours)
                self.user[k] = live
            elif m["kind"] == "Deployment":
                name = k[1]
                crash = self.crash_candidate if name.endswith("-candidate") else self.crash_stable
                self.children[k] = child_view(_ready(m, crash=crash))
            else:
                self.children[k] = child_view(copy.deepcopy(m))
        for ref in decision.delete:
            self.children.pop((ref.kind, ref.name), None)
        doc = self.md.model_dump(mode="json", by_alias=True)
        doc["status"] = decision.status.model_dump(mode="json", by_alias=True)
        self.md = ModelDeployment.model_validate(doc)

    def step(self, now: datetime, **kw: Any) -> Decision:
        decision = self.plan(now, **kw)
        self.apply(decision)
        return decision

    def settle(self, now: datetime, passes: int = 6, **kw: Any) -> Decision:
        """Plan and apply until nothing changes (bounded)."""
        decision = self.step(now, **kw)
        for _ in range(passes):
            again = self.step(now, **kw)
            if again.status == decision.status and again.desired == decision.desired and not again.delete:
                return again
            decision = again
        return decision

    def with_spec(self, **changes: Any) -> None:
        """Edit the spec (dotted `a__b` paths, None deletes), keeping status and metadata."""
        from tests.unit.manifests import edit  # noqa: PLC0415

        doc = self.md.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.md = ModelDeployment.model_validate(edit(doc, **changes))

    def annotate(self, value: str) -> None:
        doc = self.md.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc["metadata"].setdefault("annotations", {})["rollwise.dev/action"] = value
        self.md = ModelDeployment.model_validate(doc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def steady_children(
    md: ModelDeployment, *, owner_uid: str = UID, serving_image: str = IMAGE
) -> list[Manifest]:
    """What the first pass of a new ModelDeployment asks for (no children yet, no rollout): the
    planner's steady state, planned through `decide` with the router its spec names."""
    decision = decide(
        md,
        Observed(),
        now=T0,
        owner_uid=owner_uid,
        serving_image=serving_image,
        router=router_for(md.spec.rollout.traffic.provider),
    )
    return list(decision.desired)
