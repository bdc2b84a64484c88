"""The Argo CD health check we ship (charts/rollwise/files/argocd-health.lua), run the way Argo CD
runs it, on statuses the operator's own planner builds for every phase.

`ArgoHealth` emulates Argo CD's Lua sandbox (`argoproj/argo-cd:util/lua/lua.go`): Lua 5.1 (Argo uses
gopher-lua, a 5.1 VM; lupa ships the reference 5.1), only the base and table libraries and a safe
`os` (a custom check gets no `string` library, not even string methods), the object decoded from
JSON into the global `obj` (nulls dropped, every number a double), and the returned table read as
{status, message}, an unknown status becoming Unknown. tests/integration/test_gitops_health.py runs
the same emulation on live objects from the cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import lupa.lua51 as lua51
import pytest
from rollwise.api.v1alpha1 import ModelDeployment, Phase, Reason
from rollwise.kube.reconcile import status_json
from rollwise.plan.revision import revision_from_spec
from rollwise.plan.split import TrafficSplit
from rollwise.plan.state import State
from rollwise.plan.status import status_of

from e2e import paths
from tests.unit.manifests import base

SCRIPT = paths.REPO / "charts" / "rollwise" / "files" / "argocd-health.lua"
DOCS = paths.REPO / "docs" / "gitops.md"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# The globals a custom health check sees in Argo CD (gopher-lua's base library, table, safe os).
_SANDBOX = """
local script = ...
local base = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "print", "rawequal",
  "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
}
local chunk, err = loadstring(script, "=argocd-health.lua")
if chunk == nil then error(err) end
return function(obj)
  local env = {obj = obj, _VERSION = _VERSION, table = table,
               os = {time = os.time, date = os.date, clock = os.clock}}
  for _, name in ipairs(base) do env[name] = _G[name] end
  env._G = env
  setfenv(chunk, env)
  return chunk()
end
"""


@dataclass(frozen=True)
class Health:
    status: str
    message: str


class ArgoHealth:
    """Runs the shipped health check on objects as Argo CD would."""

    def __init__(self, script: str | None = None) -> None:
        self.lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
        # Without the string library gopher-lua gives strings no metatable: `s:sub(1)` fails there,
        # so it must fail here too.
        self.lua.execute('debug.setmetatable("", nil)')
        self.run = self.lua.execute(_SANDBOX, script if script is not None else SCRIPT.read_text())

    def _decode(self, value: Any) -> Any:
        """JSON -> Lua as Argo's decodeValue does: objects and arrays become tables, nulls vanish."""
        if isinstance(value, dict):
            table = self.lua.table()
            for key, item in value.items():
                if item is not None:
                    table[key] = self._decode(item)
            return table
        if isinstance(value, list):
            table = self.lua.table()
            for i, item in enumerate(value, start=1):
                table[i] = self._decode(item)
            return table
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        return float(value)

    def __call__(self, obj: dict[str, Any]) -> Health:
        # Through JSON first: what Argo reads is the API's JSON, never Python objects.
        result = self.run(self._decode(json.loads(json.dumps(obj))))
        if lua51.lua_type(result) != "table":
            raise AssertionError(f"expect table output from Lua script, not {lua51.lua_type(result)}")
        status, message = result["status"], result["message"]
        if status not in ARGO_STATUSES:
            return Health("Unknown", "Lua returned an invalid health status")
        return Health(str(status), "" if message is None else str(message))


@pytest.fixture(scope="module")
def health() -> ArgoHealth:
    return ArgoHealth()


NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def object_in(phase: Phase, reason: Reason, message: str, *, weight: int = 0) -> dict[str, Any]:
    """A ModelDeployment whose status is what the operator's planner writes for this state."""
    doc = base()
    doc["metadata"].update({"name": "iris", "namespace": "ml", "generation": 3, "uid": "u1"})
    doc["spec"]["rollout"] = {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    md = ModelDeployment.model_validate(doc)
    in_rollout = phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, *ENDED)
    state = State(
        phase=phase,
        stable=revision_from_spec(md),
        candidate="c0ffee" if in_rollout else None,
        candidate_version="2.0.0" if in_rollout else None,
        step=1 if in_rollout else None,
        step_started_at=NOW if in_rollout else None,
        reason=reason,
        message=message,
    )
    status = status_of(md, state, TrafficSplit(candidate=weight), now=NOW)
    return {**md.model_dump(mode="json", by_alias=True, exclude_none=True), "status": status_json(status)}


ENDED = (Phase.ROLLING_BACK, Phase.ROLLED_BACK)

PHASES = [
    pytest.param(
        Phase.PENDING, Reason.WAITING_FOR_READY, "Progressing", id="a new object waits: Progressing"
    ),
    pytest.param(Phase.HEALTHY, Reason.AVAILABLE, "Healthy", id="stable serving, no rollout: Healthy"),
    pytest.param(Phase.PROGRESSING, Reason.PROGRESSING, "Progressing", id="a canary walking: Progressing"),
    pytest.param(Phase.PAUSED, Reason.PAUSED, "Suspended", id="a pause step waits for a human: Suspended"),
    pytest.param(
        Phase.PAUSED,
        Reason.ANALYSIS_INCONCLUSIVE,
        "Suspended",
        id="an inconclusive analysis waits for a human: Suspended",
    ),
    pytest.param(Phase.PROMOTING, Reason.PROMOTED, "Progressing", id="promoting: Progressing"),
    pytest.param(
        Phase.ROLLING_BACK,
        Reason.ABORTED,
        "Degraded",
        id="rolling back: the desired version failed, Degraded",
    ),
    pytest.param(
        Phase.ROLLED_BACK, Reason.ANALYSIS_FAILED, "Degraded", id="rolled back: stable serves, Degraded"
    ),
    pytest.param(
        Phase.DEGRADED, Reason.STABLE_UNAVAILABLE, "Degraded", id="no stable replica available: Degraded"
    ),
    pytest.param(
        Phase.DEGRADED,
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        "Degraded",
        id="stable past its deadline: Degraded",
    ),
    pytest.param(Phase.INVALID, Reason.INVALID_SPEC, "Degraded", id="an invalid spec: Degraded"),
]


@pytest.mark.parametrize(("phase", "reason", "expected"), PHASES)
def test_each_phase_maps_to_its_argo_health(
    health: ArgoHealth, phase: Phase, reason: Reason, expected: str
) -> None:
    obj = object_in(phase, reason, f"why: {reason.value}", weight=50 if phase is Phase.PAUSED else 0)
    got = health(obj)
    assert got.status == expected, got
    assert phase.value in got.message or expected == "Healthy", got
    assert f"why: {reason.value}" in got.message, got


def test_every_phase_has_a_row() -> None:
    """A new phase must be given an Argo CD health here (and in the Lua) before it ships."""
    assert {p.values[0] for p in PHASES} == set(Phase)


def test_a_paused_canary_says_where_it_stands(health: ArgoHealth) -> None:
    got = health(object_in(Phase.PAUSED, Reason.PAUSED, "step 2/2: pause", weight=50))
    assert got == Health("Suspended", "Paused: candidate 2.0.0 at 50%: step 2/2: pause")


def test_a_rolled_back_candidate_names_both_versions_and_why(health: ArgoHealth) -> None:
    obj = object_in(Phase.ROLLED_BACK, Reason.ABORTED, "rolled back; the stable serves all traffic")
    assert health(obj) == Health(
        "Degraded",
        "RolledBack: candidate 2.0.0 rolled back: rolled back; the stable serves all traffic; "
        "stable 1.0.0 serves all traffic",
    )
    # The newest history entry is the rollout that just ended: its outcome and reason say why.
    obj["status"]["history"] = [
        {"version": "2.0.0", "outcome": "Aborted", "message": "aborted by rollwise.dev/action"},
        {"version": "1.5.0", "outcome": "Promoted", "message": "every step passed"},
    ]
    assert health(obj) == Health(
        "Degraded",
        "RolledBack: candidate 2.0.0 rolled back: Aborted: aborted by rollwise.dev/action; "
        "stable 1.0.0 serves all traffic",
    )
    obj["status"]["history"][0].update(outcome="RolledBack", message="analysis failed: ok 91 < 99")
    assert health(obj).message == (
        "RolledBack: candidate 2.0.0 rolled back: analysis failed: ok 91 < 99; "
        "stable 1.0.0 serves all traffic"
    )


def test_a_spec_the_operator_has_not_seen_is_progressing_whatever_the_old_status_says(
    health: ArgoHealth,
) -> None:
    for phase, reason in [(Phase.HEALTHY, Reason.AVAILABLE), (Phase.ROLLED_BACK, Reason.ABORTED)]:
        obj = object_in(phase, reason, "old news")
        obj["metadata"]["generation"] = 4
        got = health(obj)
        assert got == Health(
            "Progressing",
            "Waiting for the Rollwise operator to observe generation 4 (status describes generation 3)",
        )


def test_an_object_without_status_is_progressing(health: ArgoHealth) -> None:
    obj = object_in(Phase.HEALTHY, Reason.AVAILABLE, "")
    del obj["status"]
    assert health(obj) == Health("Progressing", "Waiting for the Rollwise operator to report status")


def test_the_emulated_sandbox_has_no_string_library() -> None:
    """The emulation is strict where Argo CD is: a check using `string` would fail in Argo."""
    with pytest.raises(lua51.LuaError):
        ArgoHealth('return {status = string.upper("healthy")}')({"metadata": {}})
    with pytest.raises(lua51.LuaError):
        ArgoHealth('local s = "x"; return {status = s:upper()}')({"metadata": {}})
    assert ArgoHealth('return {status = "Fine"}')({}) == Health(
        "Unknown", "Lua returned an invalid health status"
    )


def test_the_docs_carry_the_shipped_script_verbatim() -> None:
    """docs/gitops.md shows the argocd-cm snippet; it must be this very script, indented once."""
    docs = DOCS.read_text()
    key = "resource.customizations.health.rollwise.dev_ModelDeployment: |"
    assert key in docs
    block = docs.split(key, 1)[1].split("```", 1)[0]
    indent = re.match(r"\n( +)", block)
    assert indent is not None, block[:200]
    lines = [line[len(indent.group(1)) :] for line in block.strip("\n").splitlines()]
    assert "\n".join(lines).strip() == SCRIPT.read_text().strip()


def test_a_stable_model_monitoring_found_degraded_is_degraded(health: ArgoHealth) -> None:
    obj = object_in(Phase.HEALTHY, Reason.AVAILABLE, "4/4 replicas available")
    obj["status"]["conditions"].append(
        {
            "type": "ModelHealthy",
            "status": "False",
            "reason": "ModelDegraded",
            "message": "degraded (2 failing look(s) in a row): drift: PSI 0.41",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    )
    assert health(obj) == Health(
        "Degraded", "Healthy: ModelDegraded: degraded (2 failing look(s) in a row): drift: PSI 0.41"
    )
