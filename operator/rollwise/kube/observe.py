"""Live objects -> `plan.observed.Observed`. Reads nothing itself: bodies come from Kopf indices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rollwise.kube.batch import observed_job
from rollwise.plan.manifest import Manifest
from rollwise.plan.names import ANNOTATION_REVISION, LABEL_TRACK, Track
from rollwise.plan.observed import Observed, TrackState, deployment_rolled_out


def child_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the planner and the routers read of one of our children, for the index to hold.

    The index keeps a view of every child of every ModelDeployment in memory, so only what is
    read stays: no managedFields (nothing reads them; a third or more of a server-side applied
    object), and of a Deployment's pod template only each container's args, which routers read
    back as routing flags (the template is two thirds of the rest). Measured at 1 000
    ModelDeployments: about 30 KB less per model. The rest is shared with the watched body."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    view = {**body, "metadata": meta}
    if body.get("kind") == "Deployment" and isinstance(spec := body.get("spec"), Mapping):
        template = spec.get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        args = [{"name": c.get("name"), "args": c.get("args") or []} for c in containers]
        view["spec"] = {
            **{k: v for k, v in spec.items() if k != "template"},
            "template": {"spec": {"containers": args}},
        }
    return view


def track_state(deployment: Mapping[str, Any] | None) -> TrackState:
    """Kubernetes' own rollout-complete rule (as `kubectl rollout status`), in one frozen value."""
    if deployment is None:
        return TrackState()
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    deadline = progressing.get("reason") == "ProgressDeadlineExceeded"
    message = ""
    if deadline:
        message = str(progressing.get("message", ""))
    elif (avail := conditions.get("Available")) and avail.get("status") == "False":
        message = str(avail.get("message", ""))
    return TrackState(
        exists=True,
        revision=(meta.get("annotations") or {}).get(ANNOTATION_REVISION),
        replicas=replicas,
        ready_replicas=int(status.get("readyReplicas", 0)),
        available_replicas=available,
        updated_replicas=updated,
        rolled_out=deployment_rolled_out(dict(deployment)),
        current_pods_only=int(status.get("replicas", 0)) <= updated,
        progress_deadline_exceeded=deadline,
        message=message,
    )


def observe(children: Iterable[Mapping[str, Any]], *, owner_uid: str = "") -> Observed:
    """Group our children by track; backtest Jobs apart (owned: controlled by `owner_uid`);
    anything else we own is passed through for routers."""
    by_track: dict[str, Mapping[str, Any]] = {}
    kept: list[Manifest] = []
    jobs = []
    for obj in children:
        if obj.get("kind") == "Job":
            jobs.append(observed_job(obj, owner_uid))
            continue
        kept.append(dict(obj))
        if obj.get("kind") == "Deployment":
            track = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_TRACK)
            if track is not None:
                by_track[track] = obj
    return Observed(
        stable=track_state(by_track.get(Track.STABLE)),
        candidate=track_state(by_track.get(Track.CANDIDATE)),
        children=tuple(kept),
        backtest_jobs=tuple(jobs),
    )
