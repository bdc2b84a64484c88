"""A revision: what a track's pods run (model + runtime), and the short hash that names it.

Changing replicas or autoscaling scales the tracks; any other change of the model or the runtime is
a new revision, which starts a rollout.
"""

from __future__ import annotations

import hashlib
import json

from rollwise.api.v1alpha1 import ModelDeployment, RevisionSpec

_REVISIONS: dict[tuple[int, int], tuple[object, object, str]] = {}
"""revision_of's memo, by the identity of the (frozen) model and runtime values; the planner asks
for the same few hashes many times a pass, and each costs two dumps, a JSON encoding and a SHA-256."""
_REVISIONS_KEPT = 4096


def revision_of(revision: RevisionSpec) -> str:
    """A short hash of what shapes the pods: the model and the runtime minus its scale settings.

    Changing replicas or autoscaling scales the tracks; it does not start a rollout.
    """
    key = (id(revision.model), id(revision.runtime))
    hit = _REVISIONS.get(key)
    # The entry keeps both values alive, so their ids cannot be reused while it stands.
    if hit is not None and hit[0] is revision.model and hit[1] is revision.runtime:
        return hit[2]
    digest = _revision_hash(revision)
    if len(_REVISIONS) >= _REVISIONS_KEPT:
        del _REVISIONS[next(iter(_REVISIONS))]
    _REVISIONS[key] = (revision.model, revision.runtime, digest)
    return digest


def _revision_hash(revision: RevisionSpec) -> str:
    runtime = revision.runtime.model_dump(mode="json", exclude={"replicas", "autoscaling"}, exclude_none=True)
    payload = {"model": revision.model.model_dump(mode="json", exclude_none=True), "runtime": runtime}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def revision_from_spec(md: ModelDeployment) -> RevisionSpec:
    """What the spec asks the (next) stable to run."""
    return RevisionSpec(model=md.spec.model, runtime=md.spec.runtime)
