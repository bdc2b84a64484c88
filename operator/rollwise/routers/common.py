"""What every router shares: the consent a user's route object must carry, finding live objects,
the shape of a spec problem, and the serving image's own routing flags.

A ModelDeployment is written by a tenant of its namespace, and its spec names the HTTPRoute,
VirtualService or Ingress to edit; naming an object is not the right to edit it. So an object is
edited only when it carries `TRAFFIC_FOR` naming this very ModelDeployment (`consent_refusal`): the
object's owner opts in, and without that a router writes nothing to it and reads it as not
routing, with the fix in the message (which the rollout shows while it waits and rolls back with).

User-hash forwarding and A/B matches work the same behind any provider (stable pods forward a hash
range of users, or the matching requests, to the candidate Service), and the `replicas` router
mirrors through the same flags; so each router renders and reads them back through this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from rollwise_contract.matches import RequestMatch

from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.plan.manifest import Manifest, annotations_of, name_of
from rollwise.plan.names import Track, track_name
from rollwise.plan.router import RouterReading, UserObject
from rollwise.plan.split import TrafficSplit

TRAFFIC_FOR = "rollwise.dev/traffic-for"
"""On a user's HTTPRoute, VirtualService or Ingress: the name of the one ModelDeployment (in the
object's namespace) allowed to edit it, e.g. `rollwise.dev/traffic-for: iris`. Set by the object's
owner, never by Rollwise (an applied copy never carries it, so removing it revokes at once)."""

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


def parsed_match(build: Callable[[], RequestMatch | None]) -> RequestMatch | None:
    """A match read off a live object, or None when the object holds one the API would refuse (a
    header regex that is not RE2, a name too long): a user's edit of a route must read as a match
    that is not ours, never crash the pass."""
    try:
        return build()
    except ValidationError:
        return None


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


def target_problems(configured: bool, edits: UserObject) -> list[str]:
    """The block naming the router's object is missing: the one problem every editing router shares."""
    block, field = edits.spec_field
    return (
        [] if configured else [f"spec.rollout.traffic.{block}: required with provider {block}; add {field}"]
    )


def ab_matches(md: ModelDeployment) -> list[RequestMatch]:
    """The A/B test's declared matches (none without an abTest block)."""
    ab = md.spec.rollout.ab_test
    return list(ab.match or []) if ab is not None else []


def with_user_hash(md: ModelDeployment, objects: Sequence[Manifest], weight: int) -> tuple[int, str | None]:
    """A provider's weight overlaid with user-hash forwarding, which lives in the stable pods' flags:
    while it runs, the share of users hashed to the candidate is the split's weight."""
    flags = serving_flags(md, objects)
    if flags.sticky_header is not None and flags.sticky_weight is not None:
        return flags.sticky_weight, flags.sticky_header
    return weight, None


def own_services(md: ModelDeployment) -> tuple[str, str, str]:
    """The Services a ModelDeployment's routes may point at: `<name>`, `<name>-stable`, `<name>-candidate`."""
    name = md.metadata.name
    return (name, track_name(name, Track.STABLE), track_name(name, Track.CANDIDATE))


def object_ref(md: ModelDeployment, kind: str, name: str) -> str:
    """How messages name a user's object: `HTTPRoute ml/web`."""
    return f"{kind} {md.metadata.namespace or 'default'}/{name}"


def consent_refusal(md: ModelDeployment, obj: Manifest) -> str | None:
    """Why a router may not edit the user's `obj`, or None when it carries `TRAFFIC_FOR: <md name>`.

    Only an exact match consents: no annotation, an empty value or another ModelDeployment's name
    all refuse, so one tenant cannot route another's traffic by naming its object in a spec.
    """
    where = object_ref(md, str(obj.get("kind", "")), name_of(obj))
    fix = f"annotate {where} with {TRAFFIC_FOR}={md.metadata.name} to let this ModelDeployment route it"
    value = annotations_of(obj).get(TRAFFIC_FOR)
    if value == md.metadata.name:
        return None
    if value is None:
        return f"{where} is not opted in (no {TRAFFIC_FOR} annotation), so nothing is written to it; {fix}"
    return (
        f"{where} is opted in for ModelDeployment {value!r} ({TRAFFIC_FOR}={value}), not this one, "
        f"so nothing is written to it; {fix}"
    )


def refused(message: str) -> RouterReading:
    """The reading of a user's object the router may not edit: nothing routes through it, and why."""
    return RouterReading(None, False, message)


def not_found(md: ModelDeployment, kind: str, name: str, fix: str = "") -> RouterReading:
    """The reading while the object the spec names does not exist: nothing routes, and why."""
    where = f"{kind} {name} not found in namespace {md.metadata.namespace}"
    return RouterReading(None, False, f"{where}; {fix}" if fix else where)
