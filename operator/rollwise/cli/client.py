"""The plugin's only contact with the API server: read ModelDeployments and Events, set the action,
and read the stable pod's shadow diff through the API server's service proxy.

Connection settings follow kubectl: `--kubeconfig`, else `KUBECONFIG` (a `:`-separated list is
merged), else `~/.kube/config`, else the in-cluster service account; `--context` picks a context;
the namespace defaults to the context's. Every failure becomes a `CliError` whose one line names
what is wrong and the fix, never a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from rollwise.api import batch
from rollwise.api.actions import ACTION_ANNOTATION
from rollwise.api.batch import ModelBatchJob
from rollwise.api.v1alpha1 import GROUP, PLURAL, VERSION, ModelDeployment
from rollwise.cli.outcome import ExitCode
from rollwise.cli.shadow import DiffFormatError, ShadowDiff, read_diff
from rollwise.cli.view import EventRow
from rollwise.plan.desired import SERVICE_PORT
from rollwise.plan.names import Track, track_name

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT_SECONDS = 15
"""Per API request; a hung connection must not hang a CI job past its own --timeout for long."""
DIFF_TIMEOUT_SECONDS = 10.0
"""Default for `diff --timeout`: the stable pod answers from memory, so a longer wait means the
proxy cannot reach it."""
CRDS_FIX = (
    "install the CRDs: `helm install rollwise charts/rollwise` "
    "(or `kubectl apply --server-side -f charts/rollwise/crds/`)"
)


class CliError(Exception):
    """A problem the user can fix: printed as one line, the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where to connect, as kubectl's global flags say."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


def _kubeconfig_paths(flag: str | None) -> list[Path]:
    raw = flag or os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


class Client:
    """ModelDeployments and their Events in one cluster; `namespace` is the default namespace."""

    def __init__(self, api: client.ApiClient, namespace: str, server: str) -> None:
        self.api = api
        self.namespace = namespace
        self.server = server

    @classmethod
    def connect(cls, target: Target) -> Client:
        cfg = client.Configuration()
        cfg.retries = 1  # fail fast when the API server is down; kubectl does not retry either
        paths = _kubeconfig_paths(target.kubeconfig)
        existing = [p for p in paths if p.is_file()]
        if target.kubeconfig and not existing:
            raise CliError(f"--kubeconfig {target.kubeconfig}: no such file; pass the path of a kubeconfig")
        if existing:
            joined = os.pathsep.join(str(p) for p in existing)
            try:
                contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]  # untyped upstream
                    config_file=joined
                )
                config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped upstream
                    config_file=joined, context=target.context, client_configuration=cfg, persist_config=False
                )
            except ConfigException as err:
                if target.context and not any(c.get("name") == target.context for c in contexts or []):
                    names = ", ".join(c.get("name", "?") for c in contexts or []) or "none"
                    raise CliError(
                        f"--context {target.context}: not in {joined} (contexts: {names}); "
                        "pick one from `kubectl config get-contexts`"
                    ) from err
                raise CliError(f"kubeconfig {joined}: {err}; fix the file or pass --kubeconfig") from err
            except (OSError, ValueError) as err:
                raise CliError(f"kubeconfig {joined}: {err}; fix the file or pass --kubeconfig") from err
            name = target.context or (current or {}).get("name")
            ctx = next((c for c in contexts if c.get("name") == name), current or {})
            default_ns = (ctx.get("context") or {}).get("namespace") or "default"
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]  # untyped upstream
                    client_configuration=cfg
                )
            except ConfigException as err:
                raise CliError(f"in-cluster configuration: {err}; pass --kubeconfig") from err
            sa_ns = SERVICE_ACCOUNT_NAMESPACE
            default_ns = sa_ns.read_text().strip() if sa_ns.exists() else "default"
        else:
            where = os.pathsep.join(str(p) for p in paths)
            raise CliError(
                f"no kubeconfig at {where}; set KUBECONFIG or pass --kubeconfig "
                '(local cluster: eval "$(.venv/bin/python -m e2e.cluster env)")'
            )
        api = client.ApiClient(cfg)
        return cls(api, target.namespace or default_ns, str(cfg.host))

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]  # untyped upstream

    @contextmanager
    def _errors(self, what: str, namespace: str | None) -> Iterator[None]:
        """Turn API and connection failures into one-line errors naming the fix."""
        where = f" in namespace {namespace}" if namespace else ""
        try:
            yield
        except client.ApiException as err:
            raise CliError(self._explain(err, what, where)) from err
        except urllib3.exceptions.HTTPError as err:
            reason = getattr(err, "reason", None) or err
            raise CliError(
                f"cannot reach the API server at {self.server}: {reason}; is the cluster running? "
                "(`kubectl cluster-info`; check --kubeconfig/--context)"
            ) from err

    def _explain(self, err: client.ApiException, what: str, where: str) -> str:
        status = err.status
        body = _json(err.body)
        message = str(body.get("message") or err.reason or "").strip()
        if status == 404:
            details = body.get("details") or {}
            if body.get("kind") == "Status" and details.get("name"):
                return f"{what}{where}: not found; list them with `kubectl rollwise list -A`"
            return f"the ModelDeployment API ({GROUP}/{VERSION}) is not served by {self.server}; {CRDS_FIX}"
        if status == 403:
            return (
                f"{what}{where}: forbidden ({message}); ask for get, list and patch on "
                f"{PLURAL}.{GROUP} and list on events"
            )
        if status == 401:
            return f"{self.server} refused the credentials ({message}); refresh them in your kubeconfig"
        return f"{what}{where}: the API server answered {status} {err.reason}: {message}"

    # -----------------------------------------------------------------------------------------

    def get(self, name: str, namespace: str | None = None) -> ModelDeployment:
        ns = namespace or self.namespace
        with self._errors(f'modeldeployment "{name}"', ns):
            body = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        return _parse(_mapping(body))

    def get_batch_job(self, name: str, namespace: str | None = None) -> ModelBatchJob:
        ns = namespace or self.namespace
        with self._errors(f'modelbatchjob "{name}"', ns):
            body = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, ns, batch.PLURAL, name, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        found = _mapping(body)
        try:
            return ModelBatchJob.model_validate(found)
        except ValidationError as err:
            first = err.errors()[0]
            path = ".".join(str(p) for p in first["loc"])
            raise CliError(f"{ns}/{name}: cannot read it ({path}: {first['msg']})") from err

    def list_all(self, namespace: str | None) -> list[ModelDeployment]:
        """Every ModelDeployment in `namespace`, or in all namespaces when None; sorted."""
        api = client.CustomObjectsApi(self.api)
        body: object
        with self._errors("modeldeployments", namespace):
            if namespace is None:
                body = api.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT_SECONDS
                )
            else:
                body = api.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT_SECONDS
                )
        items = [_parse(_mapping(item)) for item in _mapping(body).get("items") or []]
        return sorted(items, key=lambda md: (md.metadata.namespace or "", md.metadata.name))

    def events(self, md: ModelDeployment) -> list[EventRow]:
        """Events regarding this object (by uid, so a deleted namesake's do not show).

        The core/v1 Events API also returns events.k8s.io/v1 Events (one storage, two views):
        the operator writes the latter, Kopf and kubectl the former.
        """
        ns = md.metadata.namespace or self.namespace
        selector = (
            f"involvedObject.uid={md.metadata.uid}"
            if md.metadata.uid
            else (f"involvedObject.name={md.metadata.name},involvedObject.kind=ModelDeployment")
        )
        with self._errors("events", ns):
            items = (
                client.CoreV1Api(self.api)
                .list_namespaced_event(ns, field_selector=selector, _request_timeout=REQUEST_TIMEOUT_SECONDS)
                .items
            )
        return [_event_row(e) for e in items]

    def request_action(self, md: ModelDeployment, value: str) -> None:
        """Set the `rollwise.dev/action` annotation (a merge patch touches nothing else)."""
        ns = md.metadata.namespace or self.namespace
        patch = {"metadata": {"annotations": {ACTION_ANNOTATION: value}}}
        with self._errors(f'modeldeployment "{md.metadata.name}"', ns):
            client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, md.metadata.name, patch, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )

    def shadow_diff(
        self, md: ModelDeployment, *, timeout_seconds: float = DIFF_TIMEOUT_SECONDS
    ) -> ShadowDiff:
        """The rows where the shadow answered otherwise, from one stable pod (the one the
        `<name>-stable` Service's proxy picks; each pod and worker keeps its own)."""
        ns = md.metadata.namespace or self.namespace
        service = track_name(md.metadata.name, Track.STABLE)
        path = (
            f"/api/v1/namespaces/{ns}/services/{service}:{SERVICE_PORT}/proxy"
            f"/v2/models/{md.spec.model.name}/diff"
        )
        where = f"Service {service} in namespace {ns}"
        try:
            method, url, headers, _, _ = self.api.param_serialize(
                "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
            )
            response = self.api.call_api(method, url, headers, _request_timeout=timeout_seconds)
            body: bytes = response.read() or b""  # type: ignore[no-untyped-call]  # untyped upstream
        except (urllib3.exceptions.HTTPError, client.ApiException) as err:
            reason = getattr(err, "reason", None) or err
            if isinstance(err, urllib3.exceptions.TimeoutError) or isinstance(
                reason, urllib3.exceptions.TimeoutError
            ):
                raise CliError(
                    f"{where}: no answer within {timeout_seconds:g}s through the API server's service "
                    f"proxy; is a stable pod ready? (`kubectl -n {ns} get pods -l "
                    f"rollwise.dev/model-deployment={md.metadata.name},rollwise.dev/track=stable`; "
                    "or raise --timeout)",
                    ExitCode.TIMEOUT,
                ) from err
            raise CliError(
                f"cannot reach the API server at {self.server}: {reason}; is the cluster running? "
                "(`kubectl cluster-info`; check --kubeconfig/--context)"
            ) from err
        if response.status != 200:
            raise CliError(_diff_refusal(response.status, body, where, md.metadata.name))
        try:
            return read_diff(body)
        except DiffFormatError as err:
            raise CliError(
                f"{where}: the stable pod's /diff answer is not readable ({err}); "
                "is its serving image older than the plugin?"
            ) from err


def _diff_refusal(status: int, body: bytes, where: str, name: str) -> str:
    """Why the proxy or the stable pod said no, and the fix."""
    doc = _json(body)
    message = str(doc.get("message") or doc.get("error") or body[:200].decode("utf-8", "replace")).strip()
    if status == 404 and doc.get("kind") == "Status":
        return (
            f"{where}: not found; the track Services exist while a candidate does: "
            f"is {name} in a shadow rollout? (`kubectl rollwise status {name}`)"
        )
    if status == 404 and "--mirror-url" in message:
        return (
            f"{where}: the stable pod mirrors to no shadow ({message}); "
            f"`diff` shows rows only during a shadow step (`kubectl rollwise status {name}`)"
        )
    if status == 503:
        return f"{where}: no ready stable pod to ask ({message}); wait for one and run it again"
    if status == 403:
        return f"{where}: forbidden ({message}); ask for get on services/proxy in that namespace"
    if status == 401:
        return f"the API server refused the credentials ({message}); refresh them in your kubeconfig"
    return f"{where}: the proxy answered {status}: {message}"


def _mapping(value: object) -> dict[str, Any]:
    """The custom objects API returns untyped JSON; anything but an object is a broken answer."""
    if not isinstance(value, dict):
        raise CliError(f"the API server sent {type(value).__name__} where an object was expected; retry")
    return value


def _json(raw: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _parse(body: dict[str, Any]) -> ModelDeployment:
    meta = body.get("metadata") or {}
    try:
        return ModelDeployment.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise CliError(
            f"{meta.get('namespace')}/{meta.get('name')}: cannot read it ({path}: {first['msg']}); "
            "is the plugin older than the CRD? reinstall rollwise"
        ) from err


def _event_row(e: client.CoreV1Event) -> EventRow:
    series = e.series
    time: datetime | None = (
        (series.last_observed_time if series is not None else None)
        or e.last_timestamp
        or e.event_time
        or e.first_timestamp
        or (e.metadata.creation_timestamp if e.metadata is not None else None)
    )
    count = (series.count if series is not None else None) or e.count or 1
    return EventRow(time=time, type=e.type or "", reason=e.reason or "", message=e.message or "", count=count)
