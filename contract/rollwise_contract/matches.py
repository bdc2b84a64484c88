"""A/B request matches: the shape `spec.rollout.abTest.match` declares and the server's
`--forward-match` flag carries, so stable pods forward exactly the requests the spec names.

Header regexes are written by tenants and run on every request, so they are RE2 (google-re2), the
one import here beyond pydantic and the standard library: RE2 matches in time linear in the
input, so no pattern can hang a worker the way `(a+)+$` hangs a backtracking engine, and it is the
dialect Envoy and Istio match with. A pattern RE2 cannot compile (a backreference, lookaround) is
refused where it is written, naming the field, instead of failing in a proxy or a pod.
"""

from __future__ import annotations

from typing import Protocol

import re2
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from rollwise_contract.base import ApiModel, count, rule

HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
"""An HTTP header (or cookie) name: RFC 9110 token characters."""

RE2_ERROR = "rollwise_re2_syntax"
"""The pydantic error type of a regex RE2 does not accept."""

_QUIET = re2.Options()
_QUIET.log_errors = False  # the error is ours to report, not RE2's to print on stderr


class Regex(Protocol):
    """What the server needs of a compiled pattern."""

    def fullmatch(self, text: str) -> object | None: ...


def compile_re2(pattern: str) -> Regex:
    """The RE2 program for a pattern; raises `re2.error` when RE2 cannot compile it."""
    regex: Regex = re2.compile(pattern, options=_QUIET)
    return regex


class HeaderMatch(ApiModel):
    """Match requests by an HTTP header."""

    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    """Header name, e.g. `x-model-variant`."""
    value: str | None = Field(default=None, min_length=1, max_length=1024)
    """Exact value to match."""
    regex: str | None = Field(default=None, min_length=1, max_length=1024)
    """Regular expression the value must match (RE2 syntax)."""

    @field_validator("regex")
    @classmethod
    def _re2_syntax(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                compile_re2(regex)
            except re2.error as err:
                reason = err.args[0] if err.args else err
                raise PydanticCustomError(
                    RE2_ERROR,
                    "not valid RE2 syntax ({reason}); RE2, which Envoy, Istio and the model server "
                    "match with, has no backreferences like \\1 and no lookaround like (?=...) or "
                    "(?<=...): rewrite the pattern without them, e.g. list the alternatives (a|b)",
                    {"reason": reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)},
                ) from None
        return regex

    @rule(
        cel="(has(self.value) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1",
        field=None,
        message="set exactly one of value or regex",
    )
    def _one_matcher(self) -> bool:
        return count(self.value is not None, self.regex is not None) == 1


class CookieMatch(ApiModel):
    """Match requests by a cookie's exact value."""

    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    """Cookie name."""
    value: str = Field(min_length=1, max_length=1024)
    """Exact value to match."""


class RequestMatch(ApiModel):
    """One condition sending a request to the candidate: exactly one of header or cookie."""

    header: HeaderMatch | None = None
    """Match on an HTTP header."""
    cookie: CookieMatch | None = None
    """Match on a cookie."""

    @rule(
        cel="(has(self.header) ? 1 : 0) + (has(self.cookie) ? 1 : 0) == 1",
        field=None,
        message="set exactly one of header or cookie",
    )
    def _one_kind(self) -> bool:
        return count(self.header is not None, self.cookie is not None) == 1
