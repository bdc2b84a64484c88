"""The `replicas` router: needs nothing installed.

Weights: both tracks sit behind the `<name>` Service, and the planner shares pods between them by
weight (`plan.split.replicas_for`); at 0 % the Service selects only stable pods (a blue/green
preview or a first analysis runs beside it unseen), at 100 % only candidate pods (the blue/green
switch, with the old stable still up as the instant rollback). The intended weight is recorded
on the Service (`rollwise.dev/weight`), since a pod ratio cannot tell 5 % from 20 %.

Shadow and A/B go through the serving image's own flags on the stable pods: `--mirror-url` copies
each request to the candidate Service and discards its answer; `--hash-header/--hash-range/
--forward-url` forward a fixed set of user-hash buckets to it, and `--forward-match` the requests
whose header or cookie matches. So every strategy works with nothing installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rollwise.api.v1alpha1 import ModelDeployment, TrafficProvider
from rollwise.plan.manifest import Manifest, find, name_of
from rollwise.plan.names import LABEL_TRACK, Track
from rollwise.plan.observed import deployment_rolled_out
from rollwise.plan.router import Resource, RouterPlan, RouterReading, UserObject
from rollwise.plan.split import TrafficSplit
from rollwise.routers.common import (
    ANNOTATION_WEIGHT,
    forward_args,
    match_forward_args,
    mirror_args,
    serving_flags,
)


class ReplicasRouter:
    name: ClassVar[TrafficProvider] = TrafficProvider.REPLICAS
    scales_by_weight: ClassVar[bool] = True
    routes_to_tracks: ClassVar[bool] = False
    edits: ClassVar[UserObject | None] = None
    owns: ClassVar[tuple[Resource, ...]] = ()

    def problems(self, md: ModelDeployment) -> list[str]:
        return []

    def render(self, md: ModelDeployment, split: TrafficSplit, live: Sequence[Manifest]) -> RouterPlan:
        stable_args: tuple[str, ...] = ()
        main: Track | None
        if split.sticky_header is not None:
            main, stable_args = Track.STABLE, forward_args(md, split)
        elif split.matches:
            main, stable_args = Track.STABLE, match_forward_args(md, split)
        elif split.candidate == 0:
            main = Track.STABLE
        elif split.candidate == 100:
            main = Track.CANDIDATE
        else:
            main = None
        if split.mirror:
            stable_args = (*stable_args, *mirror_args(md))
        return RouterPlan(
            main_track=main,
            main_annotations=((ANNOTATION_WEIGHT, str(split.candidate)),),
            stable_args=stable_args,
        )

    def read(self, md: ModelDeployment, objects: Sequence[Manifest]) -> RouterReading:
        service = find(objects, "Service", md.metadata.name)
        if service is None:
            return RouterReading(None, False, f"Service {md.metadata.name} not found")
        meta = service.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        raw = annotations.get(ANNOTATION_WEIGHT) if isinstance(annotations, dict) else None
        spec = service.get("spec")
        selector = spec.get("selector") if isinstance(spec, dict) else None
        track = selector.get(LABEL_TRACK) if isinstance(selector, dict) else None
        if isinstance(raw, str) and raw.isdigit() and int(raw) <= 100:
            weight = int(raw)
        elif track == Track.STABLE:
            weight = 0
        elif track == Track.CANDIDATE:
            weight = 100
        else:
            return RouterReading(None, False, f"Service {md.metadata.name} records no weight")
        flags = serving_flags(md, objects)
        header = flags.sticky_header if flags.sticky_weight is not None else None
        if header is not None and not 0 < weight < 100:
            return RouterReading(None, False, f"user-hash forwarding with weight {weight}")
        split = TrafficSplit(weight, mirror=flags.mirror, matches=flags.matches, sticky_header=header)
        deployments = [
            o
            for o in objects
            if o.get("kind") == "Deployment" and name_of(o).startswith(f"{md.metadata.name}-")
        ]
        stable = find(objects, "Deployment", f"{md.metadata.name}-{Track.STABLE}")
        if stable is None:
            return RouterReading(split, False, "the stable Deployment does not exist yet")
        waiting = [name_of(d) for d in deployments if not deployment_rolled_out(d)]
        if waiting:
            return RouterReading(split, False, f"waiting for {', '.join(waiting)} to roll out")
        if (split.mirror or split.matches or header is not None) and _terminating(stable):
            # Old stable pods lack the routing flags and answer every request they still get
            # until they exit (preStop keeps them serving a few seconds): not in effect yet.
            return RouterReading(split, False, f"waiting for old {name_of(stable)} pods to terminate")
        return RouterReading(split, True)


def _terminating(deployment: Manifest) -> bool:
    status = deployment.get("status")
    count = status.get("terminatingReplicas", 0) if isinstance(status, dict) else 0
    return isinstance(count, int) and count > 0
