"""Kubernetes Events about a ModelDeployment (events.k8s.io/v1), one per decision note."""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes import client

from rollwise.plan.decision import Note

CONTROLLER = "rollwise.dev/operator"
INSTANCE = os.environ.get("POD_ID") or socket.gethostname()


def post_events(api: client.ApiClient, body: Mapping[str, Any], notes: tuple[Note, ...]) -> None:
    meta = body["metadata"]
    regarding = client.V1ObjectReference(
        api_version=body["apiVersion"],
        kind=body["kind"],
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        resource_version=meta.get("resourceVersion"),
    )
    events = client.EventsV1Api(api)
    for note in notes:
        now = dt.datetime.now(dt.UTC)
        event = client.EventsV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta['name']}.{uuid.uuid4().hex[:12]}", namespace=meta["namespace"]
            ),
            event_time=now,
            reporting_controller=CONTROLLER,
            reporting_instance=INSTANCE[:128],
            action=note.reason.value,
            reason=note.reason.value,
            type=note.type.value,
            note=note.message[:1024],
            regarding=regarding,
        )
        events.create_namespaced_event(meta["namespace"], event)
