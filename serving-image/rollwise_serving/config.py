"""The server's settings: one frozen value built from flags and ``ROLLWISE_*`` variables.

Every flag has an environment twin (``--model-uri`` <-> ``ROLLWISE_MODEL_URI``) because the operator
sets env vars on its pods while people at a shell type flags; a flag wins over its variable. All
problems are reported in one pass, each naming the flag, the value and the fix, so a pod that fails
to start says exactly what to change. Uvicorn workers re-import the app, so the settings travel to
them as the same variables (``to_environ``/``from_environ``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from rollwise_contract.base import field_path
from rollwise_contract.matches import RequestMatch
from rollwise_contract.model import PICKLE_FORMATS, ModelFormat, Track

ENV_PREFIX = "ROLLWISE_"


class SettingsError(ValueError):
    """Every bad flag at once; ``str()`` is the text shown to the user."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class HashRange:
    """Buckets ``low..high`` (inclusive) of 100 that are forwarded to the peer; ``10-19`` is 10 %."""

    low: int
    high: int

    def __contains__(self, bucket: object) -> bool:
        return isinstance(bucket, int) and self.low <= bucket <= self.high

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


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

    Raises ValueError naming the first entry that is wrong and how to fix it.
    """
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"is not JSON ({err.msg})") from None
    try:
        matches = _MATCHES.validate_python(entries)
    except ValidationError as err:
        raise ValueError(_entry_problem(err.errors()[0])) from None
    for i, match in enumerate(matches):
        regex = match.header.regex if match.header else None
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as err:
                raise ValueError(f"entry {i}: header.regex {regex!r} is not a valid regex ({err})") from None
    return tuple(matches)


def _entry_problem(error: ErrorDetails) -> str:
    if not error["loc"]:
        return _LIST_FIX
    i, *rest = error["loc"]
    place = tuple(str(p) for p in rest)
    if error["type"] == "extra_forbidden" and len(place) == 1:
        place = ()  # an unknown key where header or cookie belongs
    fix = _ENTRY_FIXES.get(place)
    if fix is None:
        return f"entry {i}: {field_path(place)}: {error['msg']}"
    return f"entry {i} {fix}" if not place else f"entry {i}: {fix}"


@dataclass(frozen=True, slots=True)
class Settings:
    model_uri: str
    name: str
    version: str
    format: ModelFormat = ModelFormat.SKLEARN
    sha256: str | None = None
    track: Track = Track.STABLE
    host: str = "0.0.0.0"
    port: int = 8080
    feature_schema: str | None = None
    """Path to the feature schema JSON, or the JSON itself (starts with ``{``)."""
    reference: str | None = None
    """Path to the reference distribution JSON shipped with the model (drift baseline)."""
    fallback_uri: str | None = None
    fallback_format: ModelFormat | None = None
    fallback_sha256: str | None = None
    deadline_ms: int | None = None
    """Primary predict budget; past it the fallback answers (without fallback: 504)."""
    redis_url: str | None = None
    cache_size: int = 0
    """In-process LRU entries; 0 disables the cache (predictions are cheap for small models)."""
    cache_ttl_seconds: int = 300
    mirror_url: str | None = None
    hash_header: str | None = None
    hash_range: HashRange | None = None
    forward_match: str | None = None
    """JSON list of A/B matches (see ``parse_forward_match``); matching requests go to --forward-url."""
    forward_url: str | None = None
    max_body_bytes: int = 1 << 20
    workers: int = 1
    max_batch_size: int = 64
    """Rows per predict call when concurrent requests are coalesced; bounds latency of a batch."""
    cache_dir: Path = Path("/tmp/rollwise-cache")
    python_class: str = "Model"
    s3_endpoint: str | None = None
    log_level: str = "info"
    access_log: bool = False

    def to_environ(self) -> dict[str, str]:
        """The ``ROLLWISE_*`` variables that rebuild these settings in a worker process."""
        env: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            env[ENV_PREFIX + field.name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return env


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_RANGE = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def build_parser() -> argparse.ArgumentParser:
    """Flags only; defaults come from the environment later so we can name both in errors."""
    p = argparse.ArgumentParser(
        prog="rollwise-serve",
        description="Serve one model over the Open Inference Protocol v2 with rollout metrics. "
        "Every flag can also be set as ROLLWISE_<FLAG> (e.g. ROLLWISE_MODEL_URI).",
        argument_default=argparse.SUPPRESS,
    )
    add = p.add_argument
    add("--model-uri", help="file:///path, /path, http(s)://..., or s3://bucket/key")
    add("--sha256", help="hex digest the artifact must match (required for sklearn and python)")
    add("--format", help="sklearn | onnx | python (default sklearn)")
    add("--name", help="model name used in URLs and metric labels")
    add("--version", help="model version used in metadata and metric labels")
    add("--track", help="stable | candidate (default stable)")
    add("--host", help="listen address (default 0.0.0.0)")
    add("--port", help="listen port (default 8080)")
    add("--feature-schema", help="feature schema JSON: a path or inline JSON")
    add("--reference", help="reference distribution JSON (path) for drift (PSI)")
    add("--fallback-uri", help="model answering when the primary fails or misses the deadline")
    add("--fallback-format", help="format of the fallback (default: same as --format)")
    add("--fallback-sha256", help="digest of the fallback artifact")
    add("--deadline-ms", help="primary predict deadline in milliseconds")
    add("--redis-url", help="redis://host:port/db for the shared prediction cache")
    add("--cache-size", help="in-process LRU entries (0 disables; default 0)")
    add("--cache-ttl-seconds", help="Redis entry time-to-live (default 300)")
    add("--mirror-url", help="base URL of a shadow server receiving a copy of each request")
    add("--hash-header", help="header whose value is hashed for sticky forwarding (e.g. x-user-id)")
    add("--hash-range", help="buckets LOW-HIGH of 0-99 forwarded to --forward-url (e.g. 0-9)")
    add(
        "--forward-match",
        help="JSON list of header/cookie matches forwarded to --forward-url, e.g. "
        '[{"header": {"name": "x-variant", "value": "b"}}]',
    )
    add("--forward-url", help="base URL of the peer answering forwarded requests (hash buckets or matches)")
    add("--max-body-bytes", help="largest accepted request body (default 1048576)")
    add("--workers", help="worker processes (default 1)")
    add("--max-batch-size", help="rows per coalesced predict call (default 64)")
    add("--cache-dir", help="writable directory for downloads (default /tmp/rollwise-cache)")
    add("--python-class", help="class name in a python-format model file (default Model)")
    add("--s3-endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL or AWS)")
    add("--log-level", help="critical | error | warning | info | debug (default info)")
    add("--access-log", help="true | false: log every request (default false)")
    return p


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags over ``ROLLWISE_*`` over defaults; raises ``SettingsError`` listing every problem."""
    environ = os.environ if environ is None else environ
    flags = vars(build_parser().parse_args(argv))
    raw: dict[str, str] = {}
    for field in dataclasses.fields(Settings):
        if field.name in flags:
            raw[field.name] = str(flags[field.name])
        elif _env(field.name) in environ:
            raw[field.name] = environ[_env(field.name)]
    return settings_from_strings(raw)


def from_environ(environ: Mapping[str, str] | None = None) -> Settings:
    return parse_settings([], environ)


def settings_from_strings(raw: Mapping[str, str]) -> Settings:
    problems: list[str] = []
    values: dict[str, object] = {}

    def where(name: str) -> str:
        return f"{_flag(name)} (env {_env(name)})"

    def need(name: str, fix: str) -> None:
        if not raw.get(name):
            problems.append(f"{where(name)} is required; {fix}")

    def choice(name: str, enum: type[StrEnum]) -> None:
        if name in raw:
            try:
                values[name] = enum(raw[name].lower())
            except ValueError:
                options = " or ".join(e.value for e in enum)
                problems.append(f"{where(name)}: {raw[name]!r} is not valid; use {options}")

    def integer(name: str, low: int, high: int) -> None:
        if name in raw:
            try:
                n = int(raw[name])
            except ValueError:
                n = low - 1
            if not low <= n <= high:
                problems.append(
                    f"{where(name)}: {raw[name]!r} is not valid; use an integer from {low} to {high}"
                )
            else:
                values[name] = n

    def digest(name: str) -> None:
        if raw.get(name):
            d = raw[name].lower().removeprefix("sha256:")
            if not _SHA256.match(d):
                problems.append(
                    f"{where(name)}: {raw[name]!r} is not a sha256 digest; use 64 hex characters "
                    "(`sha256sum FILE`)"
                )
            else:
                values[name] = d

    def url(name: str) -> None:
        if raw.get(name):
            if not raw[name].startswith(("http://", "https://")):
                problems.append(f"{where(name)}: {raw[name]!r} is not a URL; use http://host:port")
            else:
                values[name] = raw[name].rstrip("/")

    need("model_uri", "point it at the model artifact, e.g. file:///models/model.joblib or s3://bucket/key")
    need("name", "give the model a name, e.g. --name iris")
    need("version", "give the model a version, e.g. --version v1")
    for name in ("model_uri", "feature_schema", "reference", "fallback_uri", "redis_url", "hash_header"):
        if raw.get(name):
            values[name] = raw[name]
    for name in ("name", "version"):
        if raw.get(name):
            if _NAME.match(raw[name]):
                values[name] = raw[name]
            else:
                problems.append(
                    f"{where(name)}: {raw[name]!r} is not valid; use letters, digits, '.', '_' or '-' "
                    "(up to 128, starting with a letter or digit)"
                )
    choice("format", ModelFormat)
    choice("fallback_format", ModelFormat)
    choice("track", Track)
    digest("sha256")
    digest("fallback_sha256")
    integer("port", 1, 65535)
    integer("deadline_ms", 1, 3_600_000)
    integer("cache_size", 0, 10_000_000)
    integer("cache_ttl_seconds", 1, 30 * 86400)
    integer("max_body_bytes", 64, 1 << 31)
    integer("workers", 1, 64)
    integer("max_batch_size", 1, 100_000)
    url("mirror_url")
    url("forward_url")
    url("s3_endpoint")
    if raw.get("host"):
        values["host"] = raw["host"]
    if raw.get("cache_dir"):
        values["cache_dir"] = Path(raw["cache_dir"])
    if raw.get("python_class"):
        if raw["python_class"].isidentifier():
            values["python_class"] = raw["python_class"]
        else:
            problems.append(f"{where('python_class')}: {raw['python_class']!r} is not a Python class name")
    if "log_level" in raw:
        level = raw["log_level"].lower()
        if level in {"critical", "error", "warning", "info", "debug", "trace"}:
            values["log_level"] = level
        else:
            problems.append(
                f"{where('log_level')}: {raw['log_level']!r} is not valid; "
                "use critical, error, warning, info or debug"
            )
    if "access_log" in raw:
        flag = raw["access_log"].lower()
        if flag in {"true", "1", "yes", "false", "0", "no"}:
            values["access_log"] = flag in {"true", "1", "yes"}
        else:
            problems.append(f"{where('access_log')}: {raw['access_log']!r} is not valid; use true or false")
    if raw.get("redis_url") and not raw["redis_url"].startswith(("redis://", "rediss://", "unix://")):
        problems.append(f"{where('redis_url')}: {raw['redis_url']!r} is not valid; use redis://host:6379/0")
    if raw.get("hash_range"):
        m = _HASH_RANGE.match(raw["hash_range"])
        if not m or int(m[1]) > int(m[2]):
            problems.append(
                f"{where('hash_range')}: {raw['hash_range']!r} is not valid; use LOW-HIGH with "
                "0 <= LOW <= HIGH <= 99, e.g. 0-9 for 10 % of users"
            )
        else:
            values["hash_range"] = HashRange(int(m[1]), int(m[2]))
    if raw.get("forward_match"):
        try:
            parse_forward_match(raw["forward_match"])
            values["forward_match"] = raw["forward_match"]
        except ValueError as err:
            problems.append(
                f'{where("forward_match")} {err}; e.g. [{{"header": {{"name": "x-variant", "value": "b"}}}}]'
            )
        if not raw.get("forward_url"):
            problems.append("--forward-match needs --forward-url (the peer answering matching requests)")
        if raw.get("hash_header") or raw.get("hash_range"):
            problems.append("set either --forward-match or --hash-header/--hash-range, not both")
    routing = [n for n in ("hash_header", "hash_range", "forward_url") if raw.get(n)]
    if raw.get("forward_match"):
        routing = []
    if routing and len(routing) != 3:
        missing = ", ".join(
            _flag(n) for n in ("hash_header", "hash_range", "forward_url") if n not in routing
        )
        problems.append(
            f"hash forwarding needs --hash-header, --hash-range and --forward-url together; add {missing}"
        )
    fmt = values.get("format", ModelFormat.SKLEARN)
    if fmt in PICKLE_FORMATS and raw.get("model_uri") and not raw.get("sha256"):
        problems.append(
            f"{where('sha256')} is required for --format {fmt}: loading it runs code from the artifact; "
            "pin its digest (`sha256sum FILE`)"
        )
    if raw.get("fallback_uri"):
        ffmt = values.get("fallback_format", fmt)
        if ffmt in PICKLE_FORMATS and not raw.get("fallback_sha256"):
            problems.append(
                f"{where('fallback_sha256')} is required for a {ffmt} fallback: loading it runs code; "
                "pin its digest"
            )
    elif raw.get("fallback_format") or raw.get("fallback_sha256"):
        problems.append(
            "--fallback-format/--fallback-sha256 given without --fallback-uri; add --fallback-uri"
        )
    if problems:
        raise SettingsError(problems)
    return Settings(**values)  # type: ignore[arg-type]  # keys are Settings fields, checked above
