"""What is loaded, and whether it may serve: load, verify, report readiness truthfully.

The artifact's sha256 is checked *before* it is deserialised, because unpickling (sklearn) or
importing (python) runs the artifact's code: a mismatch refuses to load, logs both digests, and
keeps readiness false with the reason, so Kubernetes sends the pod no traffic and nothing wrong is
ever served. Loading runs in a thread after start-up, so liveness answers at once and readiness
turns true only when the model is really there. A fallback that fails to load does not block
readiness (the primary serves), but readiness reports it.

When the primary fails to fetch, verify or load and a fallback loaded (verified like any
artifact), the fallback serves: readiness is true with ``"serving": "fallback"`` and the
primary's reason, ``rollwise_model_loaded{role="primary"}`` is 0, and every answer counts as
outcome ``fallback`` (``rollwise_fallback_total{reason="unavailable"}``), which fails a candidate
in any rollout. That is the fallback's promise: an answer from a model the user chose, never one
from an artifact that was refused.

With ``--workers`` > 1 each worker loads its own copy, and a probe reaches only one of them:
every worker marks itself ready in ``<cache-dir>/workers-ready/`` and readiness is true only when
all ``--workers`` live workers have, so no request lands on a worker still loading.

A model URI may carry credentials (``user:password@``, a presigned query): readiness, reasons and
log lines show it only as ``rollwise_contract.redact.redact_uri`` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from rollwise_contract.model import PICKLE_FORMATS, ModelFormat
from rollwise_contract.redact import redact_uri

from rollwise_serving.config import Redactor, Settings
from rollwise_serving.errors import ArtifactError, ArtifactTooLargeError, ModelNotReadyError, StorageError
from rollwise_serving.runtimes import Runtime, load_runtime
from rollwise_serving.storage import digest_of, fetch_artifact

log = logging.getLogger("rollwise_serving.repository")


def workers_ready_dir(settings: Settings) -> Path:
    return settings.cache_dir / "workers-ready"


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class ModelSlot:
    role: str
    uri: str
    format: ModelFormat
    sha256: str | None
    state: LoadState = LoadState.LOADING
    reason: str = "loading"
    digest: str | None = None
    runtime: Runtime | None = field(default=None, repr=False)
    retryable: bool = False
    """The load failed fetching (a network or store error): trying again may succeed."""

    @property
    def shown_uri(self) -> str:
        """The URI without its credentials: what readiness and the log show."""
        return redact_uri(self.uri)

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "uri": self.shown_uri,
            "format": self.format.value,
            "state": self.state.value,
            "reason": self.reason,
            "sha256": self.digest,
        }


class LoadSettings(Protocol):
    """What loading a model reads of the settings: the server's ``Settings`` and the batch job's
    ``BatchSettings`` alike, so both load through ``load_slot`` with the same checks."""

    @property
    def cache_dir(self) -> Path: ...
    @property
    def max_model_bytes(self) -> int: ...
    @property
    def s3_endpoint(self) -> str | None: ...
    @property
    def python_class(self) -> str: ...


def load_slot(slot: ModelSlot, settings: LoadSettings, class_names: Sequence[str] | None = None) -> None:
    """Fetch, verify and deserialise one model; never raises: the outcome lands in ``slot``, its
    reason scrubbed of the URI's credentials (a library's message may quote the URI).
    ``class_names``: the feature schema's declared classes (see ``load_runtime``)."""
    secrets = Redactor([slot.uri])
    try:
        path = fetch_artifact(
            slot.uri,
            settings.cache_dir,
            max_bytes=settings.max_model_bytes,
            sha256=slot.sha256,
            s3_endpoint=settings.s3_endpoint,
        )
        digest = digest_of(path)
        if slot.sha256 is not None and digest != slot.sha256:
            if path.is_relative_to(settings.cache_dir):
                path.unlink(missing_ok=True)  # never keep a bad download where it looks cached
            raise ArtifactError(
                f"sha256 mismatch for {slot.shown_uri}: the artifact's digest is {digest}, the pinned one is "
                f"{slot.sha256}; refusing to load it. Pin the right digest or publish the right artifact."
            )
        if slot.sha256 is None and slot.format in PICKLE_FORMATS:
            raise ArtifactError(f"{slot.format} artifacts load only with a pinned sha256; pass --sha256")
        slot.digest = digest
        slot.runtime = load_runtime(
            slot.format, Path(path), python_class=settings.python_class, class_names=class_names
        )
    except (StorageError, ArtifactError) as err:
        slot.state, slot.reason = LoadState.FAILED, secrets.scrub(str(err))
        slot.retryable = isinstance(err, StorageError) and not isinstance(err, ArtifactTooLargeError)
        log.error("%s model not loaded: %s", slot.role, slot.reason)
    except Exception as err:  # a broken artifact must never take the server down
        slot.state, slot.reason = LoadState.FAILED, secrets.scrub(f"{type(err).__name__}: {err}")
        log.exception("%s model not loaded", slot.role)
    else:
        if slot.sha256 is None:
            slot.state = LoadState.READY
            slot.reason = (
                f"loaded, not verified: no digest pinned (its sha256 is {slot.digest}; pin it with --sha256)"
            )
            log.warning(
                "%s model loaded from %s without a pinned digest (sha256 %s)",
                slot.role,
                slot.shown_uri,
                slot.digest,
            )
        else:
            slot.state, slot.reason = LoadState.READY, "loaded and verified"
            log.info("%s model loaded from %s (sha256 %s)", slot.role, slot.shown_uri, slot.digest)


class Repository:
    def __init__(self, settings: Settings, class_names: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.class_names = class_names
        self.primary = ModelSlot("primary", settings.model_uri, settings.format, settings.sha256)
        self.fallback: ModelSlot | None = None
        if settings.fallback_uri:
            self.fallback = ModelSlot(
                "fallback",
                settings.fallback_uri,
                settings.fallback_format or settings.format,
                settings.fallback_sha256,
            )

    async def load(self) -> None:
        await asyncio.to_thread(load_slot, self.primary, self.settings, self.class_names)
        if self.fallback is not None:
            await asyncio.to_thread(load_slot, self.fallback, self.settings, self.class_names)
        if self.settings.workers > 1 and (self.primary.state is LoadState.READY or self.fallback_serves):
            marks = workers_ready_dir(self.settings)
            marks.mkdir(parents=True, exist_ok=True)
            (marks / str(os.getpid())).touch()

    @property
    def fallback_serves(self) -> bool:
        """The primary failed to load and the fallback did: the fallback answers everything."""
        return (
            self.primary.state is LoadState.FAILED
            and self.fallback is not None
            and self.fallback.runtime is not None
        )

    @property
    def ready(self) -> bool:
        if self.primary.state is not LoadState.READY and not self.fallback_serves:
            return False
        return self.settings.workers == 1 or self.workers_ready() >= self.settings.workers

    def workers_ready(self) -> int:
        """How many live worker processes have their model loaded (multi-worker mode)."""
        count = 0
        for mark in workers_ready_dir(self.settings).glob("*"):
            try:
                os.kill(int(mark.name), 0)
            except (ValueError, ProcessLookupError):
                continue
            except PermissionError:
                pass
            count += 1
        return count

    def runtime(self) -> Runtime:
        """The model that answers: the primary, or the fallback when the primary failed to load."""
        if self.primary.runtime is not None:
            return self.primary.runtime
        if self.fallback_serves:
            assert self.fallback is not None and self.fallback.runtime is not None
            return self.fallback.runtime
        raise ModelNotReadyError(f"model {self.settings.name} is not ready: {self.primary.reason}")

    def primary_digest(self) -> str:
        """The sha256 computed from the loaded primary artifact (pinned or not): part of every cache
        key, so answers of another artifact under the same name and version are never served."""
        if self.primary.digest is None:
            raise ModelNotReadyError(f"model {self.settings.name} is not ready: {self.primary.reason}")
        return self.primary.digest

    def fallback_runtime(self) -> Runtime | None:
        return self.fallback.runtime if self.fallback is not None else None

    def readiness(self) -> dict[str, Any]:
        slots = [self.primary] + ([self.fallback] if self.fallback else [])
        body: dict[str, Any] = {"ready": self.ready, "models": [s.as_json() for s in slots]}
        if self.primary.runtime is not None:
            body["serving"] = "primary"
        elif self.fallback_serves:
            body["serving"] = "fallback"
            body["reason"] = f"the primary failed to load, the fallback serves: {self.primary.reason}"
        if not self.ready:
            body["reason"] = self.primary.reason
            if self.primary.state is LoadState.READY:
                body["reason"] = (
                    f"{self.workers_ready()} of {self.settings.workers} workers have loaded the model"
                )
        return body
