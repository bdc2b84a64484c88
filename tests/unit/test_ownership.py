"""Ownership before write (`kube/ownership.py`): which existing objects count as ours."""

from __future__ import annotations

from typing import Any

import pytest
from rollwise.kube import ownership
from rollwise.kube.apply import ObjectKey

UID = "5f0c-ours"


def service(name: str, *refs: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop"}
    if refs:
        meta["ownerReferences"] = list(refs)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta}


OURS = {"kind": "ModelDeployment", "name": "checkout", "uid": UID, "controller": True}


@pytest.mark.parametrize(
    ("obj", "ours"),
    [
        pytest.param(service("checkout", OURS), True, id="our controller reference"),
        pytest.param(service("checkout"), False, id="no owner"),
        pytest.param(
            service("checkout", {**OURS, "controller": False}), False, id="ours but not as controller"
        ),
        pytest.param(
            service("checkout", {**OURS, "uid": "other"}),
            False,
            id="a ModelDeployment of the same name, another uid",
        ),
    ],
)
def test_only_our_controller_reference_makes_an_object_ours(obj: dict[str, Any], ours: bool) -> None:
    assert ownership.controlled_by(obj, UID) is ours


def test_an_existing_object_at_a_childs_name_is_refused_naming_it_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    existing = {ObjectKey("v1", "Service", "shop", "checkout"): service("checkout")}
    monkeypatch.setattr(ownership, "read_object", lambda api, key: existing.get(key))
    desired = [service("checkout", OURS), service("checkout-stable", OURS)]
    problems = ownership.foreign_children(object(), desired, {}, owner_uid=UID)  # type: ignore[arg-type]
    assert problems == [
        "Service shop/checkout already exists (no controller) and is not this ModelDeployment's: Rollwise "
        "never takes over an object it did not create; rename the ModelDeployment or remove that Service"
    ]


def test_children_in_the_index_are_not_read_again_and_label_lookalikes_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(api: object, key: ObjectKey) -> None:
        raise AssertionError(f"read {key}")

    monkeypatch.setattr(ownership, "read_object", never)
    ours = service("checkout", OURS)
    assert ownership.foreign_children(object(), [ours], {ObjectKey.of(ours): ours}, owner_uid=UID) == []  # type: ignore[arg-type]
    lookalike = service("checkout", {"kind": "Deployment", "name": "shop", "uid": "x", "controller": True})
    problems = ownership.foreign_children(object(), [ours], {ObjectKey.of(ours): lookalike}, owner_uid=UID)  # type: ignore[arg-type]
    assert problems and "(controlled by Deployment shop)" in problems[0]


def test_a_routers_user_objects_are_left_to_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownership, "read_object", lambda api, key: service("shop-route"))
    route = service("shop-route")
    problems = ownership.foreign_children(
        object(),
        [route],
        {},
        owner_uid=UID,
        router_objects=[ObjectKey.of(route)],  # type: ignore[arg-type]
    )
    assert problems == []
