"""Ownership before write: Rollwise creates its children and never takes over an object it does
not control (issue 16).

A server-side apply with `force` takes whatever object has the name: a ModelDeployment named
`checkout` would replace the selector of an existing Service `checkout` and add itself as owner, so
deleting the ModelDeployment later garbage-collects the victim. Before children are written, every
desired child that is not already ours (a controller ownerReference with this ModelDeployment's
UID) is looked up; if one exists under another owner, or none, the pass writes nothing but an
Invalid status naming the object and the fix. The route objects a router edits are the user's by
design and are not children; they are left to the router's own rules.

Only children missing from the owned-children index are read (the index holds ours), so a steady
ModelDeployment costs no reads; a new one costs one GET per child, each 404.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from rollwise.kube.apply import ObjectKey, read_object


def controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether `obj` has a controller ownerReference to `owner_uid`."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("controller") and r.get("uid") == owner_uid for r in refs)


def describe_owner(obj: Mapping[str, Any]) -> str:
    """Who controls `obj`, for the message: its controller's kind and name, or nobody."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    controller = next((r for r in refs if r.get("controller")), None)
    if controller is None:
        return "no controller"
    return f"controlled by {controller.get('kind', '?')} {controller.get('name', '?')}"


def unread(
    desired: Sequence[Mapping[str, Any]],
    live: Mapping[ObjectKey, Mapping[str, Any]],
    skip: Sequence[ObjectKey],
) -> list[ObjectKey]:
    """The desired children `foreign_children` must read: not in the index, not a router's."""
    excluded = set(skip)
    return [k for m in desired if (k := ObjectKey.of(m)) not in live and k not in excluded]


def foreign_children(
    api: client.ApiClient,
    desired: Sequence[Mapping[str, Any]],
    live: Mapping[ObjectKey, Mapping[str, Any]],
    *,
    owner_uid: str,
    router_objects: Sequence[ObjectKey] = (),
) -> list[str]:
    """One problem per desired child that exists and is not ours, naming it and the fix. Reads only
    the `unread` ones, so with every child in the index it makes no API call."""
    found = {key: read_object(api, key) for key in unread(desired, live, router_objects)}
    skip = set(router_objects)
    problems = []
    for manifest in desired:
        key = ObjectKey.of(manifest)
        existing = live.get(key) or found.get(key)
        if key in skip or existing is None or controlled_by(existing, owner_uid):
            continue
        problems.append(
            f"{key.kind} {key.namespace}/{key.name} already exists ({describe_owner(existing)}) and is not "
            "this ModelDeployment's: Rollwise never takes over an object it did not create; rename the "
            f"ModelDeployment or remove that {key.kind}"
        )
    return problems
