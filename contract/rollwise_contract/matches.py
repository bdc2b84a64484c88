"""A/B request matches: the shape `spec.rollout.abTest.match` declares and the server's
`--forward-match` flag carries, so stable pods forward exactly the requests the spec names."""

from __future__ import annotations

from pydantic import Field

from rollwise_contract.base import ApiModel, count, rule

HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
"""An HTTP header (or cookie) name: RFC 9110 token characters."""


class HeaderMatch(ApiModel):
    """Match requests by an HTTP header."""

    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    """Header name, e.g. `x-model-variant`."""
    value: str | None = Field(default=None, min_length=1, max_length=1024)
    """Exact value to match."""
    regex: str | None = Field(default=None, min_length=1, max_length=1024)
    """Regular expression the value must match (RE2 syntax)."""

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
