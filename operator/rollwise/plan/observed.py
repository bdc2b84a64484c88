"""What the planner sees of the world: a frozen snapshot that `kube/` builds from live objects.

Only facts the decisions need, already interpreted (a Deployment's "ready" is Kubernetes'
own rule: the controller has observed the latest generation and every replica is updated and
available), so `machine.py` never reads raw API bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rollwise.api.v1alpha1 import WebhookType
from rollwise.plan.analysis import Measured
from rollwise.plan.jobs import ObservedJob, ObservedPod
from rollwise.plan.manifest import Manifest


@dataclass(frozen=True)
class TrackState:
    """One track's Deployment as observed. `exists=False` means no Deployment at all."""

    exists: bool = False
    revision: str | None = None
    """The `rollwise.dev/revision` annotation of the Deployment (what its pods run)."""
    replicas: int = 0
    """Desired replicas as the Deployment (or its HPA) currently sets them."""
    ready_replicas: int = 0
    available_replicas: int = 0
    updated_replicas: int = 0
    rolled_out: bool = False
    """The Deployment controller has caught up with the latest spec and all replicas are updated."""
    current_pods_only: bool = False
    """No pod of an older template is left, as the controller last reported (some may still be
    starting). It does not wait for the controller to observe the latest spec: a change of
    replicas alone bumps the generation, and a shadow scaling its candidate up must not read as
    a candidate that stopped serving (it would switch its own mirror off, and scale back down)."""
    progress_deadline_exceeded: bool = False
    """The Deployment's own Progressing condition says ProgressDeadlineExceeded."""
    message: str = ""
    """Why it is not available, when Kubernetes says (e.g. a pod's CrashLoopBackOff)."""

    @property
    def available(self) -> bool:
        """Serving: rolled out and at least one pod available (replicas 0 is never available)."""
        return self.exists and self.rolled_out and self.available_replicas > 0


@dataclass(frozen=True)
class WebhookKey:
    """Identifies one webhook call, so its answer is used for exactly the gate that asked for it."""

    name: str
    """The webhook's name from spec.rollout.webhooks."""
    type: WebhookType
    revision: str
    """The candidate revision the call is about."""
    step: int | None
    """The step gate it opens (step webhooks; preRollout is step 0), None for the others."""


@dataclass(frozen=True)
class WebhookResult:
    """How a webhook answered: 2xx is `ok`; a timeout, refusal or other status is not."""

    key: WebhookKey
    ok: bool
    detail: str = ""
    """HTTP status and a short body excerpt, or the connection error."""


@dataclass(frozen=True)
class Observed:
    stable: TrackState = field(default_factory=TrackState)
    candidate: TrackState = field(default_factory=TrackState)
    children: tuple[Manifest, ...] = ()
    """Every live child we own (Deployments, Services, HPAs, router objects), as applied."""
    router_objects: tuple[Manifest, ...] = ()
    """The live provider objects the spec names but we do not own: the HTTPRoute
    (`spec.rollout.traffic.gatewayAPI.httpRoute`), VirtualService (`istio.virtualService`) or
    Ingress (`nginx.ingress`). Routers edit them; an absent one stalls the rollout, named."""
    measurements: tuple[Measured, ...] = ()
    """Answers to `plan.analysis.due_queries(md, now)`, taken just before this pass."""
    webhooks: tuple[WebhookResult, ...] = ()
    """Answers to the `Decision.webhook_calls` of earlier passes (kept by the I/O layer until the
    gate moves on)."""
    backtest_jobs: tuple[ObservedJob, ...] = ()
    """Our backtest Jobs (`plan/backtest.py`), of any revision: the current one is read, the
    others are pruned."""
    backtest_pods: tuple[ObservedPod, ...] = ()
    """Their pods, whose termination messages carry each shard's tallies."""


def deployment_rolled_out(obj: Manifest) -> bool:
    """Kubernetes' rollout-complete rule, as `kubectl rollout status` applies it: the controller has
    seen the latest spec, every replica is updated and available, and no old pod is left.

    "No old pod left" matters for routing: user-hash forwarding and mirroring live in the stable
    pods' flags, so until the last old pod is gone some requests still bypass them.
    """
    meta, spec, status = obj.get("metadata"), obj.get("spec"), obj.get("status")
    if not isinstance(meta, dict) or not isinstance(spec, dict) or not isinstance(status, dict):
        return False
    numbers = (
        meta.get("generation", 0),
        status.get("observedGeneration", 0),
        spec.get("replicas", 1),
        status.get("updatedReplicas", 0),
        status.get("replicas", 0),
        status.get("availableReplicas", 0),
    )
    ints = [n for n in numbers if isinstance(n, int)]
    if len(ints) != len(numbers):
        return False
    generation, observed, want, updated, total, available = ints
    return observed >= generation and updated >= want and total <= updated and available >= updated
