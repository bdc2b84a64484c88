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
returns a `RouterPlan` rather than bare manifests because the `replicas` router routes through the
serving image's own flags (`--mirror-url`, `--hash-*`) and the `<name>` Service's selector,
which belong to objects the planner builds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rollwise.api.v1alpha1 import ModelDeployment, TrafficProvider
from rollwise.plan.manifest import Manifest
from rollwise.plan.names import Track
from rollwise.plan.split import TrafficSplit


@dataclass(frozen=True)
class RouterPlan:
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
class RouterReading:
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


@dataclass(frozen=True)
class Resource:
    """A kind the operator watches for a router, as Kopf and the API name it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class UserObject:
    """The provider object a router edits but does not own (watched by name, not by owner label).

    Named by the spec, which any tenant of the namespace may write; so a router edits it only when
    the object itself consents (`routers.common.TRAFFIC_FOR` naming the ModelDeployment), and
    otherwise renders nothing for it and reads it as not routing, the fix in the message.
    """

    resource: Resource
    spec_field: tuple[str, str]
    """Where the spec names it, as wire names under `spec.rollout.traffic`: ("gatewayAPI", "httpRoute")."""

    def name_in(self, traffic: Mapping[str, Any]) -> str | None:
        """The object's name in a raw `spec.rollout.traffic` (read before the spec is parsed)."""
        block = traffic.get(self.spec_field[0])
        name = block.get(self.spec_field[1]) if isinstance(block, Mapping) else None
        return name if isinstance(name, str) and name else None


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
    edits: ClassVar[UserObject | None]
    """The user's object this router edits (an HTTPRoute, a VirtualService, an Ingress), if any: the
    operator watches it and hands the live copy to `render` and `read`."""
    owns: ClassVar[tuple[Resource, ...]]
    """Provider kinds this router creates as children (the nginx canary Ingress): watched by the
    owner label like the Deployments."""

    def problems(self, md: ModelDeployment) -> list[str]:
        """What this router cannot do for `md`, one line each naming the field and the fix."""
        ...

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> RouterPlan:
        """Objects and flags that route `split`; `live` holds the current provider objects. Nothing
        is rendered for a user object that has not opted in for `md`, or that routes elsewhere too."""
        ...

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterReading:
        """The split that the live `objects` (children and provider objects) route; a user object
        the router may not edit reads as no split, its message naming the object and the fix."""
        ...
