"""A custom query confined to its ModelDeployment's namespace: `namespace="<ns>"` is added to every
series selector, as prom-label-proxy does for a tenant, so a tenant's query reads only its own
namespace's series whatever it names (`{__name__=~".+"}` included).

PromQL's lexical structure is regular, so a tokenizer finds every selector: a metric name that is
not a function, keyword or number, and every `{...}` block. Label lists (`by (...)`, `on (...)`)
and function calls are told apart by the keyword before them. Anything the tokenizer does not know
is refused (`ScopeError`), never passed through: a query either comes out scoped or not at all.
Matchers are ANDed, so a tenant's own `namespace=~".+"` only narrows further.

Example: `sum(rate(x[5m])) by (pod) / sum(y{a="b"})` in `ml` ->
`sum(rate(x{namespace="ml"}[5m])) by (pod) / sum(y{a="b",namespace="ml"})`.
"""

from __future__ import annotations

import json
import re

_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`[^`]*`)
    |(?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:[a-zA-Z_][a-zA-Z0-9_]*)*)
    |(?P<ident>[a-zA-Z_][a-zA-Z0-9_:]*)
    |(?P<op>==|!=|=~|!~|<=|>=|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
"""Keywords followed by a list of label names, not selectors."""
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
    | {"quantile", "limitk", "limit_ratio"}
)
"""PromQL lexes these as operators wherever they stand (`sum by (a) (x)`), never as metric names."""
KEYWORDS = AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
"""Identifiers that are operators, modifiers or number literals (compared in lower case)."""


class ScopeError(ValueError):
    """The query has something the scoper cannot read; it is refused, not sent."""


def _tokens(query: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if m is None or m.end() == pos:
            raise ScopeError(f"cannot read the query at {query[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group()))
        pos = m.end()
    return out


def scoped(query: str, namespace: str) -> str:
    """`query` with `namespace="<namespace>"` on every selector; raises `ScopeError`."""
    matcher = f"namespace={json.dumps(namespace)}"
    tokens = _tokens(query)
    _balanced(tokens)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident":
            i = _ident(tokens, i, matcher, out)
        elif text == "{":
            i = _braces(tokens, i, matcher, out)
        elif text == "}":
            raise ScopeError("a '}' without its '{'")
        else:
            out.append(text)
            i += 1
    return "".join(out)


def _ident(tokens: list[tuple[str, str]], i: int, matcher: str, out: list[str]) -> int:
    """Copy the identifier at `tokens[i]` (scoped when it is a metric name); the index after it."""
    text = tokens[i][1]
    j = i + 1
    while j < len(tokens) and tokens[j][0] == "space":
        j += 1
    follows = tokens[j][1] if j < len(tokens) else ""
    lower = text.lower()
    out.append(text)
    if lower in LABEL_LISTS:
        if follows != "(":
            return i + 1
        close = _closing(tokens, j, "(", ")")
        out.extend(t for _, t in tokens[i + 1 : close + 1])
        return close + 1
    if follows == "(" or lower in KEYWORDS:
        return i + 1  # a function, an aggregation or a keyword
    if follows == "{":  # a metric name with matchers
        out.extend(t for _, t in tokens[i + 1 : j])
        return _braces(tokens, j, matcher, out)
    out.append("{" + matcher + "}")  # a bare metric name
    return i + 1


def _balanced(tokens: list[tuple[str, str]]) -> None:
    """Brackets pair up (strings and comments aside): a query that does not parse is refused here,
    before a selector could be misread."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for kind, text in tokens:
        if kind != "op":
            continue
        if text in "([{":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            raise ScopeError(f"a {text!r} without its {pairs[text]!r}")
    if stack:
        raise ScopeError(f"a {stack[-1]!r} that is never closed")


def _closing(tokens: list[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    depth = 0
    for k in range(start, len(tokens)):
        if tokens[k][1] == opening:
            depth += 1
        elif tokens[k][1] == closing:
            depth -= 1
            if depth == 0:
                return k
    raise ScopeError(f"a '{opening}' without its '{closing}'")


def _braces(tokens: list[tuple[str, str]], start: int, matcher: str, out: list[str]) -> int:
    """Copy the matcher block starting at `tokens[start]` ('{') with `matcher` added; the index after it."""
    close = _closing(tokens, start, "{", "}")
    inner = tokens[start + 1 : close]
    if any(t == "{" for _, t in inner):
        raise ScopeError("a '{' inside a label matcher block")
    body = "".join(t for _, t in inner).strip()
    while body.endswith(","):
        body = body[:-1].rstrip()
    out.append("{" + (f"{body},{matcher}" if body else matcher) + "}")
    return close + 1
