"""The server's settings: one frozen pydantic model built from flags and ``ROLLWISE_*`` variables.

Every flag has an environment twin (``--model-uri`` <-> ``ROLLWISE_MODEL_URI``) because the operator
sets env vars on its pods while people at a shell type flags; a flag wins over its variable. Each
setting is declared once, in ``Settings``: its type, default, ``--help`` text and what its problems
say (a ``Flag``). All problems are reported in one pass, each naming the flag, its variable, the
value and the fix, so a pod that fails to start says exactly what to change. Uvicorn workers
re-import the app, so the settings travel to them as the same variables
(``to_environ``/``from_environ``).

Some settings carry secrets: a model URI with ``user:password@`` or a presigned query string, a
``rediss://:password@`` URL, the hop token. They are shown only through ``redact_uri`` (readiness,
error messages) and every log line passes ``Redactor`` (``configure_logging``), so neither
``/v2/health/ready`` nor ``kubectl logs`` hands a tenant's credentials to whoever can read them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, TypeAdapter, ValidationError
from pydantic_core import CoreSchema, ErrorDetails, core_schema
from rollwise_contract.base import field_path
from rollwise_contract.matches import RE2_ERROR, RequestMatch
from rollwise_contract.model import PICKLE_FORMATS, ModelFormat, Track
from rollwise_contract.redact import redact_uri

ENV_PREFIX = "ROLLWISE_"


class SettingsError(ValueError):
    """Every bad flag at once; ``str()`` is the text shown to the user."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


_HASH_RANGE = re.compile(r"^(\d{1,2})-(\d{1,2})$")


@dataclass(frozen=True, slots=True)
class HashRange:
    """Buckets ``low..high`` (inclusive) of 100 that are forwarded to the peer; ``10-19`` is 10 %."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> HashRange:
        """``"0-9"`` -> ``HashRange(0, 9)``; ValueError unless ``0 <= low <= high <= 99``."""
        m = _HASH_RANGE.match(text)
        if not m or int(m[1]) > int(m[2]):
            raise ValueError(f"{text!r} is not a bucket range")
        return cls(int(m[1]), int(m[2]))

    def __contains__(self, bucket: object) -> bool:
        return isinstance(bucket, int) and self.low <= bucket <= self.high

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


# ---- --forward-match ---------------------------------------------------------------------------

_MATCHES = TypeAdapter(Annotated[list[RequestMatch], Field(min_length=1)])
_LIST_FIX = "must be a non-empty JSON list of {header: {...}} or {cookie: {...}} entries"
_NAME_FIX = "must be a non-empty string of letters, digits and !#$%&'*+.^_`|~-"
_ENTRY_FIXES = {
    (): "must have exactly one key, header or cookie",
    ("header",): "header needs exactly one of value or regex",
    ("header", "name"): "header.name " + _NAME_FIX,
    ("cookie", "name"): "cookie.name " + _NAME_FIX,
    ("cookie", "value"): "cookie needs a string value (no regex)",
    ("cookie", "regex"): "cookie needs a string value (no regex)",
}
"""What to say about a wrong entry, by the place in the entry pydantic found wrong."""


def parse_forward_match(text: str) -> tuple[RequestMatch, ...]:
    """The ``--forward-match`` JSON: a list in the ModelDeployment's ``abTest.match`` shape
    (``rollwise_contract.matches.RequestMatch``), e.g.
    ``[{"header": {"name": "x-variant", "value": "b"}}, {"cookie": {"name": "beta", "value": "1"}}]``.

    Raises ValueError naming the first entry that is wrong and how to fix it; a header regex must
    be RE2 (the contract's check).
    """
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"is not JSON ({err.msg})") from None
    try:
        matches = _MATCHES.validate_python(entries)
    except ValidationError as err:
        raise ValueError(_entry_problem(err.errors()[0])) from None
    return tuple(matches)


def _entry_problem(error: ErrorDetails) -> str:
    if not error["loc"]:
        return _LIST_FIX
    i, *rest = error["loc"]
    place = tuple(str(p) for p in rest)
    if error["type"] == RE2_ERROR:
        return f"entry {i}: {field_path(place)} {error['input']!r} is invalid: {error['msg']}"
    if error["type"] == "extra_forbidden" and len(place) == 1:
        place = ()  # an unknown key where header or cookie belongs
    fix = _ENTRY_FIXES.get(place)
    if fix is None:
        return f"entry {i}: {field_path(place)}: {error['msg']}"
    return f"entry {i} {fix}" if not place else f"entry {i}: {fix}"


# ---- what of a setting may be shown -------------------------------------------------------------


_SHORTEST_SECRET = 8
"""Query values shorter than this (``X-Amz-Expires=3600``) are not hunted for in log lines on their
own: they are no credential, and starring every ``3600`` would garble the log. The whole query is
starred whatever its length, and so is the whole URI wherever it appears."""
_SHORTEST_CREDENTIAL = 3
"""A userinfo or password shorter than this is not hunted for on its own (starring every ``u`` of
a log line would hide more than it protects); inside its URI it is always starred."""


def _secret_parts(uri: str) -> set[str]:
    """The pieces of ``uri`` that may be credentials, as they may appear in a library's message."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return {uri}
    pieces: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    for piece in (userinfo, parts.password or ""):
        pieces |= {form for form in (piece, unquote(piece)) if len(form) >= _SHORTEST_CREDENTIAL}
    if parts.query:
        pieces.add(parts.query)
        for pair in parts.query.split("&"):
            value = pair.partition("=")[2]
            for form in (value, unquote(value), quote(unquote(value), safe="")):
                if len(form) >= _SHORTEST_SECRET:
                    pieces.add(form)
    return pieces


class Redactor:
    """Hides secrets in any text: each URI by its ``redact_uri`` form, then any piece of a
    credential still there (a library may print a URI its own way, or just the password) and the
    other secrets by ``***``."""

    def __init__(self, uris: Iterable[str | None], secrets: Iterable[str | None] = ()) -> None:
        self._uris = sorted({u for u in uris if u and redact_uri(u) != u}, key=len, reverse=True)
        pieces = {s for s in secrets if s}
        for uri in self._uris:
            pieces |= _secret_parts(uri)
        self._pieces = sorted(pieces, key=len, reverse=True)

    @classmethod
    def of(cls, settings: Settings) -> Redactor:
        uris = [settings.model_uri, settings.fallback_uri, settings.redis_url, settings.feedback_redis_url]
        return cls(uris, [settings.hop_token])

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def scrub(self, text: str) -> str:
        for uri in self._uris:
            text = text.replace(uri, redact_uri(uri))
        for piece in self._pieces:
            text = text.replace(piece, "***")
        return text


class RedactingFilter(logging.Filter):
    """A handler filter passing every record, its secrets scrubbed (message and traceback)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # the formatter prints exc_text when set: the traceback's messages are scrubbed too
            record.exc_text = self.redactor.scrub(self._formatter.formatException(record.exc_info))
        return True


def configure_logging(settings: Settings) -> None:
    """The server's log lines on stderr, every one through ``RedactingFilter``. Called in the
    process that parsed the flags and in each ``--workers`` process (which starts with none)."""
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redactor = Redactor.of(settings)
    if not redactor:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))


# ---- how one setting reads and complains -------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """One setting's command-line face: its ``--help``, how its string is read, what its problems say.

    A problem reads ``--flag (env VAR): 'value' <problem>``, or ``--flag (env VAR) is required;
    <required>`` for a missing setting without default.
    """

    help: str
    problem: str = ""
    """What is wrong with the value and the fix, e.g. ``is not valid; use stable or candidate``."""
    parse: Callable[[str], object] | None = None
    """String -> value; raises ValueError when the string is not valid. Values given typed pass as is."""
    required: str = ""
    """The fix when a setting without default is missing or blank."""
    blank_is_unset: bool = True
    """Whether a blank value means "not given" (default applies); numbers, choices and switches
    refuse a blank instead, as a likely mistake."""
    explains: bool = False
    """The parser's own message says what is wrong (``--forward-match entry 0: ...``); ``problem``
    then only adds an example."""
    secret: bool = False
    """The value is a secret: a problem never shows it (pod logs are read by more people)."""
    uri: bool = False
    """The value is a URI that may carry credentials: a problem shows it through ``redact_uri``."""
    env: str = ""
    """The variable, when it is not ``ROLLWISE_<NAME>`` (a Kubernetes convention the pod follows)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if self.parse is None:
            return schema
        return core_schema.no_info_before_validator_function(self._read, schema)

    def _read(self, value: object) -> object:
        return self.parse(value) if self.parse is not None and isinstance(value, str) else value

    def describe(self, name: str, error: ErrorDetails, env: str | None = None) -> str:
        where = f"{_flag(name)} (env {env or _env(name)})"
        if error["type"] == "missing":
            return f"{where} is required; {self.required}"
        if self.explains:
            return f"{where} {error.get('ctx', {}).get('error', error['msg'])}; {self.problem}"
        value = error["input"]
        if self.secret:
            shown = "(the value, hidden)"
        elif self.uri and isinstance(value, str):
            shown = repr(redact_uri(value))
        else:
            shown = repr(value)
        return f"{where}: {shown} {self.problem}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(name: str, model: type[BaseModel] | None = None) -> str:
    """The setting's variable: ``ROLLWISE_<NAME>``, or the one its ``Flag`` names."""
    info = (model or Settings).model_fields.get(name)
    flag = next((m for m in info.metadata if isinstance(m, Flag)), None) if info else None
    return flag.env if flag is not None and flag.env else ENV_PREFIX + name.upper()


def _int_between(low: int, high: int, text: str) -> int:
    n = int(text)
    if not low <= n <= high:
        raise ValueError(f"{n} is out of range")
    return n


def _integer(help: str, low: int, high: int) -> Flag:
    problem = f"is not valid; use an integer from {low} to {high}"
    return Flag(help, problem, partial(_int_between, low, high), blank_is_unset=False)


def _choice(help: str, enum: type[StrEnum]) -> Flag:
    problem = f"is not valid; use {' or '.join(e.value for e in enum)}"
    return Flag(help, problem, lambda text: enum(text.lower()), blank_is_unset=False)


def _matching(pattern: str, text: str) -> str:
    if not re.fullmatch(pattern, text):
        raise ValueError(f"{text!r} does not match {pattern}")
    return text


def _digest(text: str) -> str:
    return _matching(r"[0-9a-f]{64}", text.lower().removeprefix("sha256:"))


def _http_url(text: str) -> str:
    return _matching(r"https?://.*", text).rstrip("/")


def _identifier(text: str) -> str:
    if not text.isidentifier():
        raise ValueError(f"{text!r} is not an identifier")
    return text


LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
_SWITCH = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _log_level(text: str) -> str:
    if text.lower() not in get_args(LogLevel):
        raise ValueError(f"{text!r} is not a log level")
    return text.lower()


def _baseline(text: str) -> str:
    values = json.loads(text)
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError(f"{text!r} is not a JSON list of numbers")
    return text


def _switch(text: str) -> bool:
    try:
        return _SWITCH[text.lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not true or false") from None


def _hop_token(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,256}", text):
        raise ValueError("not a hop token")  # never the token itself: errors are logged
    return text


def _checked_matches(text: str) -> str:
    parse_forward_match(text)
    return text


_NAME = partial(_matching, r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_NAME_PROBLEM = (
    "is not valid; use letters, digits, '.', '_' or '-' (up to 128, starting with a letter or digit)"
)
_DIGEST_PROBLEM = "is not a sha256 digest; use 64 hex characters (`sha256sum FILE`)"
_URL_PROBLEM = "is not a URL; use http://host:port"
_MATCH_EXAMPLE = 'e.g. [{"header": {"name": "x-variant", "value": "b"}}]'


# ---- the settings ------------------------------------------------------------------------------


# The model-loading settings ``rollwise-serve`` and ``rollwise-batch`` share: declared once, so a
# batch job takes a model exactly as a server does (same flags, variables, checks and messages).
ModelUri = Annotated[
    str,
    Flag(
        "file:///path, /path, http(s)://..., or s3://bucket/key",
        required="point it at the model artifact, e.g. file:///models/model.joblib or s3://bucket/key",
    ),
]
FormatSetting = Annotated[
    ModelFormat, _choice("sklearn | onnx | python | xgboost | lightgbm (default sklearn)", ModelFormat)
]
Sha256Setting = Annotated[
    str | None,
    Flag("hex digest the artifact must match (required for sklearn and python)", _DIGEST_PROBLEM, _digest),
]
FeatureSchemaSetting = Annotated[str | None, Flag("feature schema JSON: a path or inline JSON")]
CacheDirSetting = Annotated[Path, Flag("writable directory for downloads (default /tmp/rollwise-cache)")]
MaxModelBytesSetting = Annotated[
    int,
    _integer("largest model artifact, in bytes (default 4294967296 = 4 GiB)", 1024, 1 << 40),
]
PythonClassSetting = Annotated[
    str,
    Flag(
        "class name in a python-format model file (default Model)",
        "is not a Python class name",
        _identifier,
    ),
]
S3EndpointSetting = Annotated[
    str | None, Flag("S3 endpoint URL (default: AWS_ENDPOINT_URL or AWS)", _URL_PROBLEM, _http_url)
]
LogLevelSetting = Annotated[
    LogLevel,
    Flag(
        "critical | error | warning | info | debug (default info)",
        "is not valid; use critical, error, warning, info or debug",
        _log_level,
        blank_is_unset=False,
    ),
]


class Settings(BaseModel):
    """Everything the server is told at start-up; built by ``parse_settings`` from flags and env."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    model_uri: ModelUri
    name: Annotated[
        str,
        Flag(
            "model name used in URLs and metric labels",
            _NAME_PROBLEM,
            _NAME,
            required="give the model a name, e.g. --name iris",
        ),
    ]
    version: Annotated[
        str,
        Flag(
            "model version used in metadata and metric labels",
            _NAME_PROBLEM,
            _NAME,
            required="give the model a version, e.g. --version v1",
        ),
    ]
    format: FormatSetting = ModelFormat.SKLEARN
    sha256: Sha256Setting = None
    track: Annotated[Track, _choice("stable | candidate (default stable)", Track)] = Track.STABLE
    host: Annotated[str, Flag("listen address (default 0.0.0.0)")] = "0.0.0.0"
    port: Annotated[int, _integer("listen port (default 8080)", 1, 65535)] = 8080
    grpc_port: Annotated[
        int | None,
        _integer("OIP gRPC listen port (default: off; the operator sets 8081)", 1, 65535),
    ] = None
    """Port of the Open Inference Protocol's gRPC service (``grpc_service``), on ``--host``; unset,
    the server speaks REST only. Off by default because every ``--workers`` process binds it with
    ``SO_REUSEPORT``: a fixed default would let two servers started by hand on one machine (tests,
    benchmarks, a second model) share it silently, each answering part of the other's clients,
    where an explicit port fails loudly. The operator turns it on at 8081 (REST's port + 1, as
    KServe's servers do) and exposes it as the ``grpc`` port of the pod and its Services."""
    feature_schema: FeatureSchemaSetting = None
    """Path to the feature schema JSON, or the JSON itself (starts with ``{``)."""
    reference: Annotated[str | None, Flag("reference distribution JSON (path) for drift (PSI)")] = None
    """Path to the reference distribution JSON shipped with the model (drift baseline)."""
    explain: Annotated[
        bool,
        Flag(
            "true | false: serve POST /v2/models/{name}/explain (default false)",
            "is not valid; use true or false",
            _switch,
            blank_is_unset=False,
        ),
    ] = False
    """Per-feature attributions on request (``explain``); off by default because one explanation
    costs up to ``--explain-max-evaluations`` model rows."""
    explain_max_rows: Annotated[
        int, _integer("rows one explain request may ask for (default 16)", 1, 1000)
    ] = 16
    explain_max_evaluations: Annotated[
        int,
        _integer("model rows one explanation may evaluate (default 65536)", 16, 1 << 24),
    ] = 1 << 16
    """The cost bound of a model-agnostic explanation: exact Shapley values need 2^features rows
    per explained row, sampled ones (features + 1) per permutation; the number of permutations
    is what fits in this budget."""
    explain_timeout_ms: Annotated[
        int, _integer("milliseconds one explanation may take before it is abandoned (504)", 10, 600_000)
    ] = 5_000
    explain_baseline: Annotated[
        str | None,
        Flag(
            "JSON list of one number per feature: the row attributions are measured from "
            "(default: the --reference medians)",
            "is not valid; use a JSON list of numbers like [5.8, 3.0, 4.35, 1.3]",
            _baseline,
        ),
    ] = None
    fallback_uri: Annotated[
        str | None, Flag("model answering when the primary fails or misses the deadline")
    ] = None
    fallback_format: Annotated[
        ModelFormat | None, _choice("format of the fallback (default: same as --format)", ModelFormat)
    ] = None
    fallback_sha256: Annotated[
        str | None, Flag("digest of the fallback artifact", _DIGEST_PROBLEM, _digest)
    ] = None
    deadline_ms: Annotated[int | None, _integer("primary predict deadline in milliseconds", 1, 3_600_000)] = (
        None
    )
    """Primary predict budget; past it the fallback answers (without fallback: 504)."""
    redis_url: Annotated[
        str | None,
        Flag(
            "redis://host:port/db for the shared prediction cache",
            "is not valid; use redis://host:6379/0",
            partial(_matching, r"(redis|rediss|unix)://.*"),
            uri=True,
        ),
    ] = None
    redis_ca_file: Annotated[
        Path | None,
        Flag("CA bundle (PEM) that verifies a rediss:// server (default: the system's CAs)"),
    ] = None
    """With ``rediss://`` the server's certificate and host name are always verified, against this
    bundle or, without it, the system's CAs (a private CA needs this file)."""
    pod_namespace: Annotated[
        str,
        Flag(
            "the pod's Kubernetes namespace, first in every Redis cache key (default: default)",
            "is not a Kubernetes namespace; use a DNS label (lowercase letters, digits, '-')",
            partial(_matching, r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"),
            env="POD_NAMESPACE",
        ),
    ] = "default"
    """The namespace of the ModelDeployment this pod serves; its variable is ``POD_NAMESPACE``, which
    the operator sets from the downward API (``metadata.namespace``). Redis cache keys start with
    ``rollwise:<namespace>:<name>:<version>:<artifact digest>:``, so two tenants' ``fraud``/``v1``
    never share answers, and a Redis ACL can confine each tenant's credentials to its own
    ``rollwise:<namespace>:*`` keys. Without it (a server run by hand) the namespace is
    ``default``."""
    cache_size: Annotated[int, _integer("in-process LRU entries (0 disables; default 0)", 0, 10_000_000)] = 0
    """In-process LRU entries; 0 disables the cache (predictions are cheap for small models)."""
    cache_ttl_seconds: Annotated[int, _integer("Redis entry time-to-live (default 300)", 1, 30 * 86400)] = 300
    feedback_retention_seconds: Annotated[
        int, _integer("seconds an answer waits for its ground-truth label (default 3600)", 1, 30 * 86400)
    ] = 3600
    """How long what an answer predicted is kept for ``POST .../feedback``, in process and as the
    Redis TTL; a label arriving later is counted ``unmatched``. One hour covers labels that come
    back within a session (a click, a review); give more for slower ones, with room in Redis."""
    feedback_max_predictions: Annotated[
        int,
        _integer("prediction rows kept in process for labels (0: none; default 1000000)", 0, 1 << 30),
    ] = 1_000_000
    """Rows (a batch answer is as many rows as it has) kept in this process, oldest evicted first.
    A row costs a few bytes in a batch and about 200 bytes as a single-row answer (the id), so the
    default holds an hour of about 280 single-row requests a second in some 200 MB. 0 keeps nothing
    (answers still carry ids; every label is ``unmatched``)."""
    feedback_redis_url: Annotated[
        str | None,
        Flag(
            "redis://host:port/db where answers wait for labels, shared by every replica of both tracks "
            "(default: --redis-url)",
            "is not valid; use redis://host:6379/0",
            partial(_matching, r"(redis|rediss|unix)://.*"),
            uri=True,
        ),
    ] = None
    mirror_url: Annotated[
        str | None,
        Flag("base URL of a shadow server receiving a copy of each request", _URL_PROBLEM, _http_url),
    ] = None
    mirror_queue_bytes: Annotated[
        int,
        _integer(
            "bytes of request bodies waiting for or being sent to --mirror-url (default 33554432)",
            1 << 16,
            1 << 34,
        ),
    ] = 32 << 20
    """Memory for mirrored copies, in bytes; a copy that would go over it is dropped (counted). The
    default, 32 MiB, holds 32 bodies at the --max-body-bytes default (1 MiB), 8 per sender, or
    thousands of typical small ones (then the 512-copy bound applies first), and is small next to
    a serving pod's memory. Keep it at least --max-body-bytes or the largest bodies are never
    mirrored."""
    hash_header: Annotated[
        str | None, Flag("header whose value is hashed for sticky forwarding (e.g. x-user-id)")
    ] = None
    hash_range: Annotated[
        HashRange | None,
        Flag(
            "buckets LOW-HIGH of 0-99 forwarded to --forward-url (e.g. 0-9)",
            "is not valid; use LOW-HIGH with 0 <= LOW <= HIGH <= 99, e.g. 0-9 for 10 % of users",
            HashRange.parse,
        ),
    ] = None
    forward_match: Annotated[
        str | None,
        Flag(
            "JSON list of header/cookie matches forwarded to --forward-url, e.g. "
            '[{"header": {"name": "x-variant", "value": "b"}}]',
            _MATCH_EXAMPLE,
            _checked_matches,
            explains=True,
        ),
    ] = None
    """JSON list of A/B matches (see ``parse_forward_match``); matching requests go to --forward-url."""
    forward_url: Annotated[
        str | None,
        Flag(
            "base URL of the peer answering forwarded requests (hash buckets or matches)",
            _URL_PROBLEM,
            _http_url,
        ),
    ] = None
    hop_token: Annotated[
        str | None,
        Flag(
            "secret signing mirrored and forwarded copies as hops; set the same on both tracks "
            "(prefer the env var: flags show in `ps`)",
            "is not valid; use 16 to 256 letters, digits or ._~+/=- (e.g. `openssl rand -hex 32`)",
            _hop_token,
            secret=True,
        ),
        Field(repr=False),
    ] = None
    """Copies this server mirrors or forwards carry ``x-rollwise-hop: mirror:<token>`` (or
    ``forward:<token>``), and an incoming hop header is honoured (the request served here, not sent
    on) only when it carries this token. Without a token every incoming hop header is ignored, so a
    client can never opt its requests out of mirroring or forwarding; a shadow that mirrors again
    then needs the token to recognise its primary's copies. Default: none."""
    max_body_bytes: Annotated[
        int, _integer("largest accepted request body (default 1048576)", 64, 1 << 31)
    ] = 1 << 20
    request_timeout_seconds: Annotated[
        int, _integer("seconds from a request's first byte to its last (default 10)", 1, 3600)
    ] = 10
    """A client slower than this gets 408: no stalled upload holds a worker (`transport.py`)."""
    max_header_bytes: Annotated[
        int, _integer("largest request line plus headers, in bytes (default 16384)", 1024, 1 << 20)
    ] = 16 * 1024
    max_headers: Annotated[int, _integer("most headers in a request (default 100)", 8, 10_000)] = 100
    workers: Annotated[int, _integer("worker processes (default 1)", 1, 64)] = 1
    max_batch_size: Annotated[int, _integer("rows per coalesced predict call (default 64)", 1, 100_000)] = 64
    """Rows per predict call when concurrent requests are coalesced; bounds latency of a batch."""
    cache_dir: CacheDirSetting = Path("/tmp/rollwise-cache")
    max_model_bytes: MaxModelBytesSetting = 4 << 30
    """Largest artifact (primary or fallback) fetched or read, in bytes; a download is stopped where
    it crosses the limit and removed, so an endless or oversized artifact cannot fill the pod's
    disk (``--cache-dir``), and the model fails to load with a reason naming this setting. The
    default, 4 GiB, is twice the largest single-file ONNX model (protobuf caps a file at 2 GiB) and
    far above the scikit-learn and Python models a CPU server loads; give ``--cache-dir`` room for
    the primary and the fallback at this size."""
    python_class: PythonClassSetting = "Model"
    s3_endpoint: S3EndpointSetting = None
    log_level: LogLevelSetting = "info"
    access_log: Annotated[
        bool,
        Flag(
            "true | false: log every request (default false)",
            "is not valid; use true or false",
            _switch,
            blank_is_unset=False,
        ),
    ] = False

    def to_environ(self) -> dict[str, str]:
        """The ``ROLLWISE_*`` variables that rebuild these settings in a worker process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                env[_env(name)] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def _flag_of(name: str, model: type[BaseModel] | None = None) -> Flag:
    info = (model or Settings).model_fields.get(name)
    flag = next((m for m in info.metadata if isinstance(m, Flag)), None) if info else None
    return flag or Flag("", "is not a setting; remove it")


SERVE_DESCRIPTION = (
    "Serve one model over the Open Inference Protocol v2 with rollout metrics. "
    "Every flag can also be set as ROLLWISE_<FLAG> (e.g. ROLLWISE_MODEL_URI)."
)


def build_parser(
    model: type[BaseModel] | None = None, prog: str = "rollwise-serve", description: str = SERVE_DESCRIPTION
) -> argparse.ArgumentParser:
    """Flags only; defaults come from the environment later so we can name both in errors."""
    model = model or Settings
    p = argparse.ArgumentParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    for name in model.model_fields:
        p.add_argument(_flag(name), help=_flag_of(name, model).help)
    return p


_M = TypeVar("_M", bound=BaseModel)


def raw_settings(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
) -> dict[str, str]:
    """Each setting's string: its flag, else its variable; unset ones are left out."""
    environ = os.environ if environ is None else environ
    flags = vars(parser.parse_args(argv))
    raw: dict[str, str] = {}
    for name in model.model_fields:
        if name in flags:
            raw[name] = str(flags[name])
        elif _env(name, model) in environ:
            raw[name] = environ[_env(name, model)]
    return raw


def validated(model: type[_M], raw: Mapping[str, str], problems: Sequence[str] = ()) -> _M:
    """``model`` from strings keyed by field name, blank ones unset where their ``Flag`` says so;
    raises ``SettingsError`` with every field's problem and then ``problems`` (the rules about
    combinations, checked by the caller on the same strings)."""
    given = {k: v for k, v in raw.items() if v or not _flag_of(k, model).blank_is_unset}
    try:
        settings = model.model_validate(given)
    except ValidationError as err:
        fields = [
            _flag_of(str(e["loc"][0]), model).describe(str(e["loc"][0]), e, _env(str(e["loc"][0]), model))
            for e in err.errors()
        ]
        raise SettingsError([*fields, *problems]) from None
    if problems:
        raise SettingsError(problems)
    return settings


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags over ``ROLLWISE_*`` over defaults; raises ``SettingsError`` listing every problem."""
    return settings_from_strings(raw_settings(build_parser(), Settings, argv, environ))


def from_environ(environ: Mapping[str, str] | None = None) -> Settings:
    return parse_settings([], environ)


def settings_from_strings(raw: Mapping[str, str]) -> Settings:
    """Settings from strings keyed by field name; raises ``SettingsError`` listing every problem.

    Pydantic checks each setting; the rules about combinations of settings read the strings
    themselves, so they are reported even when a setting they mention is wrong too (pydantic
    skips model validators once a field fails): one pass, every problem.
    """
    given = {k: v for k, v in raw.items() if v or not _flag_of(k).blank_is_unset}
    return validated(Settings, raw, _combination_problems(given))


_HASH_ROUTING = ("hash_header", "hash_range", "forward_url")


def _combination_problems(given: Mapping[str, str]) -> list[str]:
    return [
        *_routing_problems(given),
        *digest_problems(given),
        *_redis_problems(given),
        *_port_problems(given),
    ]


def _port_problems(given: Mapping[str, str]) -> list[str]:
    grpc_port = given.get("grpc_port")
    if grpc_port is not None and grpc_port.strip() == given.get("port", "8080").strip():
        return [f"--grpc-port {grpc_port} is --port too; give gRPC a port of its own, e.g. 8081"]
    return []


def _redis_problems(given: Mapping[str, str]) -> list[str]:
    urls = (given.get("redis_url", ""), given.get("feedback_redis_url", ""))
    if "redis_ca_file" in given and not any(u.startswith("rediss://") for u in urls):
        return ["--redis-ca-file verifies a TLS Redis: use it with a rediss:// --redis-url"]
    return []


def _routing_problems(given: Mapping[str, str]) -> list[str]:
    """Forward by matches or by user hash, each with its peer; never both."""
    if "forward_match" in given:
        problems = []
        if "forward_url" not in given:
            problems.append("--forward-match needs --forward-url (the peer answering matching requests)")
        if "hash_header" in given or "hash_range" in given:
            problems.append("set either --forward-match or --hash-header/--hash-range, not both")
        return problems
    routing = [n for n in _HASH_ROUTING if n in given]
    if routing and len(routing) != len(_HASH_ROUTING):
        missing = ", ".join(_flag(n) for n in _HASH_ROUTING if n not in routing)
        return [
            f"hash forwarding needs --hash-header, --hash-range and --forward-url together; add {missing}"
        ]
    return []


def digest_problems(given: Mapping[str, str]) -> list[str]:
    """Pickles run code from the artifact when loaded: they load only with a pinned digest."""
    fmt = _format_or(given.get("format"), ModelFormat.SKLEARN)
    problems = []
    if fmt in PICKLE_FORMATS and "model_uri" in given and "sha256" not in given:
        problems.append(
            f"--sha256 (env {_env('sha256')}) is required for --format {fmt}: loading it runs code from "
            "the artifact; pin its digest (`sha256sum FILE`)"
        )
    if "fallback_uri" in given:
        ffmt = _format_or(given.get("fallback_format"), fmt)
        if ffmt in PICKLE_FORMATS and "fallback_sha256" not in given:
            problems.append(
                f"--fallback-sha256 (env {_env('fallback_sha256')}) is required for a {ffmt} fallback: "
                "loading it runs code; pin its digest"
            )
    elif given.get("fallback_format") or "fallback_sha256" in given:
        problems.append(
            "--fallback-format/--fallback-sha256 given without --fallback-uri; add --fallback-uri"
        )
    return problems


def _format_or(text: str | None, default: ModelFormat) -> ModelFormat:
    """The format ``text`` names, or ``default`` when unset or invalid (reported on its own)."""
    try:
        return ModelFormat((text or "").lower())
    except ValueError:
        return default
