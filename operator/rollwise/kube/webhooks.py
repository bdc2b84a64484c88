"""Rollout gates' webhook calls: POST the ModelDeployment and the gate, 2xx means go."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from rollwise.plan.decision import WebhookCall
from rollwise.plan.observed import WebhookResult


def call_webhook(call: WebhookCall, body: Mapping[str, Any]) -> WebhookResult:
    meta = body["metadata"]
    payload = {
        "name": meta["name"],
        "namespace": meta["namespace"],
        "webhook": call.key.name,
        "type": str(call.key.type),
        "revision": call.key.revision,
        "step": call.key.step,
        "spec": body.get("spec"),
        "status": body.get("status"),
    }
    try:
        response = httpx.post(call.url, content=json.dumps(payload), timeout=call.timeout_seconds,
                              headers={"Content-Type": "application/json"})  # fmt: skip
    except httpx.HTTPError as err:
        return WebhookResult(call.key, ok=False, detail=f"{type(err).__name__}: {err}"[:300])
    ok = 200 <= response.status_code < 300
    return WebhookResult(call.key, ok=ok, detail=f"HTTP {response.status_code}: {response.text[:200]}")
