"""The applied-hash annotation: what decides whether a child is written at all."""

from __future__ import annotations

import hashlib
import json

from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.kube.apply import HASH_ANNOTATION, desired_hash, is_current, stamped

from tests.unit.manifests import base
from tests.unit.rollout_world import steady_children


def children() -> list[dict[str, object]]:
    doc = base()
    doc["metadata"]["uid"] = "u"
    return steady_children(ModelDeployment.model_validate(doc), owner_uid="u", serving_image="img")


def test_the_hash_is_the_one_earlier_releases_stamped() -> None:
    """Canonical JSON as json.dumps(sort_keys) wrote it: live children stamped by an operator from
    before the switch to orjson still read as current, so an upgrade re-applies nothing."""
    for manifest in children():
        canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        assert desired_hash(manifest) == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_a_stamped_child_is_current_until_the_desired_one_changes() -> None:
    deployment = children()[0]
    live = stamped(deployment)
    assert live["metadata"]["annotations"][HASH_ANNOTATION] == desired_hash(deployment)
    assert is_current(deployment, live)
    changed = json.loads(json.dumps(deployment))
    changed["spec"]["replicas"] = 7
    assert not is_current(changed, live)
    assert not is_current(deployment, None)
