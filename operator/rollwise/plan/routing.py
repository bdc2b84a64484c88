"""The traffic-router port: what the state machine asks of a router, implemented in `routers/`.

Declared here (not in `routers/`) because `plan` may not import `routers`: the I/O layer picks
the router for `spec.rollout.traffic.provider` (`routers.router_for`) and hands it to
`machine.decide`, which stays pure. Routers are pure too (Flagger's 4-method router, minus any
get/create/update): they render provider objects for a split and read the split back from live
objects; `kube/` applies.

Why `render` takes the live objects (STYLE §3 shows `render(md, split)`): gatewayAPI, istio and
nginx edit an object the user owns (an HTTPRoute, a VirtualService, an Ingress). Server-side
apply replaces an atomic list such as `spec.rules` whole, so a router must render the user's
object with only the backends changed, which it can only do from the live copy. And `render`
returns a `Routing` rather than bare manifests because the `replicas` router routes through the
serving image's own flags (`--mirror-url`, `--hash-*`) and the `<name>` Service's selector,
which belong to objects the planner builds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from rollwise_contract.matches import RequestMatch

from rollwise.api.v1alpha1 import ModelDeployment, TrafficProvider
from rollwise.plan.manifest import Manifest
from rollwise.plan.names import Track
from rollwise.plan.split import TrafficSplit


@dataclass(frozen=True)
class Routing:
    """What a router needs for one split."""

    objects: tuple[Manifest, ...] = ()
    """Provider objects to apply as rendered (an edited HTTPRoute, a canary Ingress, ...)."""
    main_track: Track | None = Track.STABLE
    """Pods the `<name>` Service selects: one track, or None for both (weight by replica ratio)."""
    main_annotations: tuple[tuple[str, str], ...] = ()
    """Annotations on the `<name>` Service recording the router's intent."""
    stable_args: tuple[str, ...] = ()
    """Extra `rollwise-serve` flags for stable pods (e.g. `--mirror-url`)."""
    candidate_args: tuple[str, ...] = ()
    """Extra `rollwise-serve` flags for candidate pods."""


@dataclass(frozen=True)
class RouterState:
    """A router's reading of the live objects."""

    split: TrafficSplit | None
    """The split the live objects route; None when they are missing or unreadable."""
    accepted: bool
    """The provider has taken the objects into effect (no controller rejects them, pods rolled out)."""
    message: str = ""
    """Why not, when `split` is None or `accepted` is False."""

    def carries(self, split: TrafficSplit) -> bool:
        """Whether `split` is what the live objects route, and in effect.

        Matches are alternatives ("any entry"), so their order does not matter: ingress-nginx
        keeps a header and a cookie rule in separate annotations and cannot say which came first.
        """
        if not self.accepted or self.split is None:
            return False
        live = self.split
        return (live.candidate, live.mirror, live.sticky_header, set(live.matches)) == (
            split.candidate,
            split.mirror,
            split.sticky_header,
            set(split.matches),
        )


class Router(Protocol):
    name: ClassVar[TrafficProvider]
    """The value users write in spec.rollout.traffic.provider."""
    scales_by_weight: ClassVar[bool]
    """True when the weight is the replica ratio (the `replicas` router): the planner then shares
    pods between the tracks by weight; otherwise stable stays full size and the candidate gets
    the weight's share of pods (at least one)."""
    routes_to_tracks: ClassVar[bool]
    """True when the provider's route names the `<name>-stable` and `<name>-candidate` Services
    (an HTTPRoute's backends, a VirtualService's destinations, a canary Ingress): they then exist
    between rollouts too. Otherwise they exist only while a candidate does."""

    def problems(self, md: ModelDeployment) -> list[str]:
        """What this router cannot do for `md`, one line each naming the field and the fix."""
        ...

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> Routing:
        """Objects and flags that route `split`; `live` holds the current provider objects."""
        ...

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterState:
        """The split that the live `objects` (children and provider objects) route."""
        ...


# ---------------------------------------------------------------------------------------------
# The serving image's own routing flags, shared by every router: user-hash forwarding works the
# same behind any provider (stable pods forward a hash range of users to the candidate Service),
# and the `replicas` router mirrors through them too.

ANNOTATION_WEIGHT = "rollwise.dev/weight"
"""On the `<name>` Service: the candidate weight the replicas router routes (a ratio of pods
cannot tell 5 % from 20 % with few pods, so the intent is recorded)."""


def service_url(md: ModelDeployment, track: Track) -> str:
    """A track's Service by cluster DNS: `http://iris-candidate.ml.svc.cluster.local`."""
    return f"http://{md.metadata.name}-{track}.{md.metadata.namespace or 'default'}.svc.cluster.local"


def forward_args(md: ModelDeployment, split: TrafficSplit) -> tuple[str, ...]:
    """Stable pods forward hash buckets 0..weight-1 of 100 (by the user-id header) to the candidate.

    Example: weight 20 on x-user-id -> `--hash-header x-user-id --hash-range 0-19 --forward-url ...`.
    """
    if split.sticky_header is None:
        return ()
    return (
        "--hash-header",
        split.sticky_header,
        "--hash-range",
        f"0-{split.candidate - 1}",
        "--forward-url",
        service_url(md, Track.CANDIDATE),
    )


def match_forward_args(md: ModelDeployment, split: TrafficSplit) -> tuple[str, ...]:
    """Stable pods forward requests matching the A/B matches to the candidate (no proxy needed).

    Example: [{header: {name: x-variant, value: b}}] ->
    `--forward-match '[{"header":{"name":"x-variant","value":"b"}}]' --forward-url ...`.
    """
    if not split.matches:
        return ()
    matches = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in split.matches]
    return (
        "--forward-match",
        json.dumps(matches, separators=(",", ":"), sort_keys=True),
        "--forward-url",
        service_url(md, Track.CANDIDATE),
    )


def mirror_args(md: ModelDeployment) -> tuple[str, ...]:
    """Stable pods copy every request to the candidate Service and discard its answers."""
    return ("--mirror-url", service_url(md, Track.CANDIDATE))


@dataclass(frozen=True)
class ServingFlags:
    """Routing flags found on the live stable Deployment's serving container."""

    mirror: bool = False
    sticky_header: str | None = None
    sticky_weight: int | None = None
    matches: tuple[RequestMatch, ...] = ()


def serving_flags(md: ModelDeployment, objects: Sequence[Manifest]) -> ServingFlags:
    """Read `forward_args`/`mirror_args` back from the stable Deployment among `objects`."""
    name = f"{md.metadata.name}-{Track.STABLE}"
    for obj in objects:
        meta = obj.get("metadata")
        if obj.get("kind") != "Deployment" or not isinstance(meta, dict) or meta.get("name") != name:
            continue
        args = _container_args(obj)
        flags = dict(zip(args[::1], [*args[1:], ""], strict=True))
        header = flags.get("--hash-header") or None
        weight: int | None = None
        low, _, high = (flags.get("--hash-range") or "").partition("-")
        if low.isdigit() and high.isdigit():
            weight = int(high) - int(low) + 1
        return ServingFlags(
            mirror="--mirror-url" in flags,
            sticky_header=header,
            sticky_weight=weight,
            matches=_matches(flags.get("--forward-match", "")),
        )
    return ServingFlags()


def _matches(raw: str) -> tuple[RequestMatch, ...]:
    """`--forward-match` read back; anything unreadable reads as no matches (the step then re-applies)."""
    try:
        entries = json.loads(raw) if raw else []
        return tuple(RequestMatch.model_validate(e) for e in entries)
    except (ValueError, TypeError):
        return ()


def _container_args(deployment: Manifest) -> list[str]:
    spec = deployment.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    containers = pod.get("containers") if isinstance(pod, dict) else None
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        return []
    args = containers[0].get("args")
    return [str(a) for a in args] if isinstance(args, list) else []


def rolled_out(obj: Manifest) -> bool:
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
