"""Names and labels of the objects a ModelDeployment owns, in one place.

Routers, `kube/` and the planner all find children by these names and labels, so they must agree;
two tracks, `stable` and `candidate`, appear in names, labels and metric labels alike.
"""

from __future__ import annotations

from enum import StrEnum

from rollwise.plan.manifest import JsonValue

MANAGED_BY = "rollwise"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL_DEPLOYMENT = "rollwise.dev/model-deployment"
LABEL_TRACK = "rollwise.dev/track"
ANNOTATION_REVISION = "rollwise.dev/revision"
ANNOTATION_MODEL_VERSION = "rollwise.dev/model-version"


class Track(StrEnum):
    """The two sides of a rollout; "canary" is a strategy, never a track."""

    STABLE = "stable"
    CANDIDATE = "candidate"


def track_name(md_name: str, track: Track) -> str:
    """`iris` + candidate -> `iris-candidate`: the track's Deployment, Service and HPA share it."""
    return f"{md_name}-{track}"


def common_labels(md_name: str) -> dict[str, JsonValue]:
    """Labels on every child, so `kubectl get all -l rollwise.dev/model-deployment=iris` finds them."""
    return {LABEL_NAME: md_name, LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL_DEPLOYMENT: md_name}


def track_labels(md_name: str, track: Track) -> dict[str, JsonValue]:
    """Labels of a track's objects and pods."""
    return {**common_labels(md_name), LABEL_TRACK: str(track)}


def track_selector(md_name: str, track: Track) -> dict[str, JsonValue]:
    """A track's pods. Deployment selectors are immutable, so this never includes a revision."""
    return {LABEL_MODEL_DEPLOYMENT: md_name, LABEL_TRACK: str(track)}


def serving_selector(md_name: str) -> dict[str, JsonValue]:
    """Every serving pod of both tracks: the `replicas` router weights by replica ratio behind it."""
    return {LABEL_MODEL_DEPLOYMENT: md_name}
