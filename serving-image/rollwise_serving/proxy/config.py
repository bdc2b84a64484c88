"""The proxy's settings: the bundled server's flags it shares, declared again with the same
``Flag`` helpers (so ``--name``, ``--mirror-url``, ``--hop-token``... read, default and complain
exactly as ``rollwise-serve``'s do, under the same ``ROLLWISE_*`` variables), plus its own:
``--upstream``, ``--protocol`` and the bounds of the upstream connection.

Combination rules (forwarding by hash or by match, each with its peer) are the server's own
``config._combination_problems`` routing check, so both commands refuse the same mistakes alike.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rollwise_contract.model import Track

from rollwise_serving.config import (
    _MATCH_EXAMPLE,
    _NAME,
    _NAME_PROBLEM,
    _URL_PROBLEM,
    ENV_PREFIX,
    Flag,
    HashRange,
    LogLevel,
    SettingsError,
    _checked_matches,
    _choice,
    _hop_token,
    _http_url,
    _integer,
    _log_level,
    _matching,
    _routing_problems,
    _switch,
)


class Protocol(StrEnum):
    """What the user's server speaks; one adapter module each (``proxy/oip_rest.py``...)."""

    OIP_REST = "oip-rest"
    HTTP_JSON = "http-json"
    OPENAI = "openai"


def _path(text: str) -> str:
    """A dotted path such as ``$.predictions`` or ``$.data.0.label`` (``http_json.DottedPath``)."""
    from rollwise_serving.proxy.http_json import DottedPath  # noqa: PLC0415 - one parser, one place

    DottedPath.parse(text)
    return text


_PATH_PROBLEM = "is not valid; use a dotted path such as $.predictions or $.outputs.0.data"


class ProxySettings(BaseModel):
    """Everything ``rollwise-proxy`` is told at start-up (``parse_proxy_settings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    upstream: Annotated[
        str,
        Flag(
            "base URL of the user's model server, e.g. http://127.0.0.1:9000",
            _URL_PROBLEM,
            _http_url,
            required="point it at the model server beside the proxy, e.g. http://127.0.0.1:9000",
        ),
    ]
    protocol: Annotated[Protocol, _choice("oip-rest | http-json | openai", Protocol)]
    name: Annotated[
        str,
        Flag("model name used in metric labels", _NAME_PROBLEM, _NAME, required="e.g. --name iris"),
    ]
    version: Annotated[
        str,
        Flag("model version used in metric labels", _NAME_PROBLEM, _NAME, required="e.g. --version v1"),
    ]
    track: Annotated[Track, _choice("stable | candidate (default stable)", Track)] = Track.STABLE
    host: Annotated[str, Flag("listen address (default 0.0.0.0)")] = "0.0.0.0"
    port: Annotated[int, _integer("listen port (default 8080)", 1, 65535)] = 8080
    grpc_port: Annotated[
        int | None, _integer("oip-rest: listen port of the OIP gRPC service (default: off)", 1, 65535)
    ] = None
    """With ``--grpc-upstream``: unary gRPC calls passed on, ``ModelInfer`` counted (``oip_grpc``)."""
    grpc_upstream: Annotated[
        str | None,
        Flag(
            "host:port of the upstream's OIP gRPC service, e.g. 127.0.0.1:9001",
            "is not valid; use host:port",
            partial(_matching, r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}"),
        ),
    ] = None
    prediction_path: Annotated[
        str | None, Flag("http-json: dotted path of the prediction in the answer", _PATH_PROBLEM, _path)
    ] = None
    """Where an http-json answer holds its predictions, one per row (``$.predictions``)."""
    features_path: Annotated[
        str | None,
        Flag("http-json: dotted path of the rows of features in the request", _PATH_PROBLEM, _path),
    ] = None
    """Where an http-json request holds its rows: objects by feature name, or lists in schema order."""
    upstream_ready_path: Annotated[
        str | None,
        Flag("GET path the proxy's readiness asks the upstream (default: per protocol)"),
    ] = None
    """``/v2/health/ready`` for oip-rest, ``/v1/models`` for openai, ``/`` for http-json."""
    upstream_timeout_seconds: Annotated[
        int, _integer("seconds the upstream may take per read (default 60)", 1, 3600)
    ] = 60
    """Bounds the wait for a free connection, for the answer's headers and for each read of its
    body: a streamed answer lasts as long as its chunks keep coming (``proxy/upstream.py``)."""
    max_connections: Annotated[
        int, _integer("connections to the upstream at most (default 128)", 1, 10_000)
    ] = 128
    """Requests beyond it wait for a free connection (the upstream's own concurrency bound)."""
    feature_schema: Annotated[str | None, Flag("feature schema JSON: a path or inline JSON")] = None
    reference: Annotated[str | None, Flag("reference distribution JSON (path) for drift (PSI)")] = None
    mirror_url: Annotated[
        str | None,
        Flag("base URL of a shadow receiving a copy of each request", _URL_PROBLEM, _http_url),
    ] = None
    mirror_queue_bytes: Annotated[
        int, _integer("bytes of request bodies queued for --mirror-url (default 33554432)", 1 << 16, 1 << 34)
    ] = 32 << 20
    hash_header: Annotated[str | None, Flag("header whose value is hashed for sticky forwarding")] = None
    hash_range: Annotated[
        HashRange | None,
        Flag(
            "buckets LOW-HIGH of 0-99 forwarded to --forward-url",
            "is not valid; use e.g. 0-9",
            HashRange.parse,
        ),
    ] = None
    forward_match: Annotated[
        str | None,
        Flag(
            "JSON list of header/cookie matches forwarded to --forward-url",
            _MATCH_EXAMPLE,
            _checked_matches,
            explains=True,
        ),
    ] = None
    forward_url: Annotated[
        str | None, Flag("base URL of the peer answering forwarded requests", _URL_PROBLEM, _http_url)
    ] = None
    hop_token: Annotated[
        str | None,
        Flag(
            "secret signing mirrored and forwarded copies (prefer the env var)",
            "is not valid; use 16 to 256 letters, digits or ._~+/=-",
            _hop_token,
            secret=True,
        ),
        Field(repr=False),
    ] = None
    feedback_max_predictions: Annotated[
        int, _integer("oip-rest: prediction rows kept for labels (0: none; default 1000000)", 0, 1 << 30)
    ] = 1_000_000
    """Answers kept for ``POST /v2/models/{name}/feedback`` by their OIP ``id``, as the bundled
    server keeps its own (``feedback``); 0 passes feedback on to the upstream instead."""
    feedback_retention_seconds: Annotated[
        int, _integer("seconds an answer waits for its label (default 3600)", 1, 30 * 86400)
    ] = 3600
    feedback_redis_url: Annotated[
        str | None,
        Flag(
            "redis://host:port/db where answers wait for labels, shared by every replica of both tracks",
            "is not valid; use redis://host:6379/0",
            partial(_matching, r"(redis|rediss|unix)://.*"),
            uri=True,
        ),
    ] = None
    redis_ca_file: Annotated[
        Path | None, Flag("CA bundle (PEM) that verifies a rediss:// --feedback-redis-url")
    ] = None
    pod_namespace: Annotated[
        str,
        Flag(
            "the pod's namespace, first in every Redis key (default: default)",
            "is not a Kubernetes namespace; use a DNS label",
            partial(_matching, r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"),
            env="POD_NAMESPACE",
        ),
    ] = "default"
    max_body_bytes: Annotated[
        int, _integer("largest accepted request body (default 1048576)", 64, 1 << 31)
    ] = 1 << 20
    request_timeout_seconds: Annotated[
        int, _integer("seconds from a request's first byte to its last (default 10)", 1, 3600)
    ] = 10
    max_header_bytes: Annotated[
        int, _integer("largest request line plus headers, in bytes (default 16384)", 1024, 1 << 20)
    ] = 16 * 1024
    max_headers: Annotated[int, _integer("most headers in a request (default 100)", 8, 10_000)] = 100
    log_level: Annotated[
        LogLevel,
        Flag(
            "critical | error | warning | info | debug (default info)",
            "is not valid",
            _log_level,
            _matching,
            blank_is_unset=False,
        ),
    ] = "info"
    access_log: Annotated[
        bool,
        Flag(
            "true | false: log every request (default false)", "is not valid", _switch, blank_is_unset=False
        ),
    ] = False

    @property
    def redis_url(self) -> str | None:
        """The proxy caches nothing: its only Redis is the feedback store's."""
        return None

    @property
    def ready_path(self) -> str:
        if self.upstream_ready_path:
            return self.upstream_ready_path
        return {Protocol.OIP_REST: "/v2/health/ready", Protocol.OPENAI: "/v1/models"}.get(self.protocol, "/")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _flag_of(name: str) -> Flag:
    info = ProxySettings.model_fields.get(name)
    flag = next((m for m in info.metadata if isinstance(m, Flag)), None) if info else None
    return flag or Flag("", "is not a setting; remove it")


def parse_proxy_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ProxySettings:
    """Flags over ``ROLLWISE_*`` over defaults; raises ``SettingsError`` listing every problem."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="rollwise-proxy",
        description="Export Rollwise's metric contract for any model server: listen, forward to "
        "--upstream, observe. Every flag can also be set as ROLLWISE_<FLAG>.",
        argument_default=argparse.SUPPRESS,
    )
    for name in ProxySettings.model_fields:
        parser.add_argument(_flag(name), help=_flag_of(name).help)
    flags = vars(parser.parse_args(argv))
    raw: dict[str, str] = {}
    for name in ProxySettings.model_fields:
        env = _flag_of(name).env or ENV_PREFIX + name.upper()
        if name in flags:
            raw[name] = str(flags[name])
        elif env in environ:
            raw[name] = environ[env]
    given = {k: v for k, v in raw.items() if v or not _flag_of(k).blank_is_unset}
    problems = _routing_problems(given)
    if ("grpc_port" in given) != ("grpc_upstream" in given):
        problems.append("--grpc-port and --grpc-upstream go together: the proxy's port and the upstream's")
    elif "grpc_port" in given and given.get("protocol") != Protocol.OIP_REST:
        problems.append("--grpc-port proxies the OIP's gRPC service: use it with --protocol oip-rest")
    if given.get("protocol") == Protocol.HTTP_JSON and "prediction_path" not in given:
        problems.append("--protocol http-json needs --prediction-path, e.g. $.predictions")
    try:
        settings = ProxySettings.model_validate(given)
    except ValidationError as err:
        fields = [_flag_of(str(e["loc"][0])).describe(str(e["loc"][0]), e) for e in err.errors()]
        raise SettingsError([*fields, *problems]) from None
    if problems:
        raise SettingsError(problems)
    return settings
