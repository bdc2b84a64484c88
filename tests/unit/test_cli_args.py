"""The plugin's arguments, exit codes and action flow, against a scripted stand-in for the API.

The stand-in only replays statuses, so these tests pin the plugin's own logic (nonces, waiting for
the operator's acknowledgement, judging the end from a fresh status, exit codes); the real
operator and API server are exercised in tests/integration/test_cli.py.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
from rich.console import Console
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.cli.client import Client
from rollwise.cli.main import build_parser, duration_seconds, run
from rollwise.cli.outcome import ExitCode
from rollwise.cli.view import EventRow

from tests.unit.cli_objects import aborted, conditions, md, paused_at_pause_step, promoted


class ScriptedApi:
    """Answers `get` from a script: `before` until an action is requested and `lag` more times (the
    operator has not seen it yet), then `after` in order, each recording the action in
    status.lastAction as the operator does (the last one repeats). Records every annotation written."""

    namespace = "ml"

    def __init__(self, before: ModelDeployment, after: Sequence[ModelDeployment] = (), lag: int = 0) -> None:
        self.before = before
        self.after = list(after)
        self.lag = lag
        self.requested: list[str] = []
        self.gets = 0

    def get(self, name: str, namespace: str | None = None) -> ModelDeployment:
        self.gets += 1
        if not self.requested or not self.after:
            return self.before
        if self.lag > 0:
            self.lag -= 1
            return self.before
        current = self.after[0] if len(self.after) == 1 else self.after.pop(0)
        status = current.status.model_copy(update={"last_action": self.requested[-1]})
        return current.model_copy(update={"status": status})

    def list_all(self, namespace: str | None) -> list[ModelDeployment]:
        return []

    def events(self, obj: ModelDeployment) -> list[EventRow]:
        return []

    def request_action(self, obj: ModelDeployment, value: str) -> None:
        self.requested.append(value)

    def close(self) -> None:
        pass


def invoke(api: ScriptedApi | None, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    code = run(list(argv), with_demo=False, client=cast(Client, api), console=console)
    return code, out.getvalue()


def parse(*argv: str, demo: bool = False) -> argparse.Namespace:
    return build_parser(with_demo=demo).parse_args(list(argv))


# Arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ["-n", "prod", "--context", "c", "status", "iris"], id="kubectl flags before the command"
        ),
        pytest.param(
            ["status", "iris", "-n", "prod", "--context", "c"], id="kubectl flags after the command"
        ),
        pytest.param(
            ["--namespace", "x", "status", "-n", "prod", "iris", "--context=c"], id="the later flag wins"
        ),
    ],
)
def test_kubectl_flags_go_anywhere(argv: list[str]) -> None:
    args = parse(*argv)
    assert (args.namespace, args.context, args.name, args.kubeconfig) == ("prod", "c", "iris", None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2m30s", 150), ("0.5", 0.5)],
)
def test_durations_read_like_kubectl(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "1d", "-3"])
def test_a_bad_duration_is_a_usage_error_naming_the_fix(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("wait", "iris", "--timeout", text)
    assert exit_info.value.code == ExitCode.USAGE
    assert "write e.g. 90, 90s, 5m or 1h30m" in capsys.readouterr().err


def test_commands_and_their_flags() -> None:
    assert parse("promote", "iris", "--full", "--wait", "--timeout", "5m").timeout == 300
    assert parse("list", "-A").all_namespaces
    assert parse("status", "iris", "-w").watch
    assert not hasattr(parse("pause", "iris"), "wait")  # pausing never ends a rollout: nothing to wait for
    assert parse("demo", demo=True).command == "demo"


def test_the_kubectl_plugin_has_no_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("demo")
    assert exit_info.value.code == ExitCode.USAGE
    assert "invalid choice: 'demo'" in capsys.readouterr().err


# Connection errors: one line naming the fix, exit 2 -------------------------------------------


def test_no_kubeconfig_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert run(["list"], with_demo=False) == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: no kubeconfig at {tmp_path / 'absent'}; set KUBECONFIG or pass --kubeconfig"
    )
    assert "\n" not in err


def test_a_missing_kubeconfig_flag_and_a_broken_file_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--kubeconfig", str(tmp_path / "nope"), "list"], with_demo=False) == ExitCode.USAGE
    assert f"--kubeconfig {tmp_path / 'nope'}: no such file" in capsys.readouterr().err
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nkind: Config\ncontexts: []\nclusters: []\nusers: []\n")
    assert run(["--kubeconfig", str(broken), "list"], with_demo=False) == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: kubeconfig {broken}: ") and "fix the file or pass --kubeconfig" in err


def test_an_unknown_context_lists_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "contexts: [{name: a, context: {cluster: c, user: u, namespace: team}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    assert run(["--kubeconfig", str(config), "--context", "b", "list"], with_demo=False) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--context b: not in" in err and "(contexts: a)" in err and "kubectl config get-contexts" in err


def test_an_unreachable_api_server_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "contexts: [{name: a, context: {cluster: c, user: u, namespace: team}}]\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    assert run(["--kubeconfig", str(config), "list"], with_demo=False) == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the API server at http://127.0.0.1:9")
    assert "is the cluster running?" in err and "\n" not in err


# Actions ----------------------------------------------------------------------------------------


def test_an_action_writes_the_annotation_with_a_fresh_nonce_and_reports_the_operator_s_answer() -> None:
    resumed = md(phase="Progressing", candidateVersion="2.0.0", currentStep=2, weight=20, message="resumed")
    api = ScriptedApi(paused_at_pause_step(), [resumed], lag=2)
    code, out = invoke(api, "resume", "iris", "--interval", "0.01")
    assert code == ExitCode.OK
    (value,) = api.requested
    assert value.startswith("resume:")
    assert f"ml/iris: requested resume (rollwise.dev/action={value})" in out
    assert "iris: Progressing | step 3/5 analysis (3 measurements)" in out  # after the acknowledgement
    assert "Paused" not in out
    invoke(ScriptedApi(paused_at_pause_step(), [resumed]), "resume", "iris")
    again = ScriptedApi(paused_at_pause_step(), [resumed])
    invoke(again, "resume", "iris")
    assert again.requested[0] != value  # the same command twice is two requests


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        pytest.param(["promote", "iris"], "promote", id="promote skips a step"),
        pytest.param(["promote", "iris", "--full"], "promote-full", id="promote --full skips them all"),
        pytest.param(["abort", "iris"], "abort", id="abort"),
        pytest.param(["resume", "iris"], "resume", id="resume"),
    ],
)
def test_each_command_sets_its_verb(argv: list[str], verb: str) -> None:
    api = ScriptedApi(paused_at_pause_step(), [paused_at_pause_step()])
    assert invoke(api, *argv)[0] == ExitCode.OK
    assert api.requested[0].split(":")[0] == verb


def test_an_action_that_does_not_apply_is_refused_without_writing() -> None:
    api = ScriptedApi(promoted())
    code, out = invoke(api, "promote", "iris")
    assert code == ExitCode.USAGE
    assert api.requested == []
    assert out.startswith("error: iris is Healthy (2/2 replicas available): no rollout in progress;")


def test_an_action_the_operator_never_takes_up_times_out_with_exit_3() -> None:
    api = ScriptedApi(paused_at_pause_step())  # the status never records the action
    code, out = invoke(api, "resume", "iris", "--timeout", "0.3")
    assert code == ExitCode.TIMEOUT
    assert (
        "the operator has not taken up 'resume:" in out and "is it running and watching namespace ml?" in out
    )


def test_promote_wait_exits_0_once_promoted_never_on_the_status_from_before() -> None:
    promoting = md(phase="Promoting", candidateVersion="2.0.0", currentStep=4, weight=60)
    api = ScriptedApi(paused_at_pause_step(), [promoting, promoting, promoted()], lag=2)
    code, out = invoke(api, "promote", "iris", "--full", "--wait", "--interval", "0.01")
    assert code == ExitCode.OK, out
    assert out.rstrip().splitlines()[-1] == "iris: Promoted 2.0.0: 2/2 replicas available"
    assert "iris: Promoting" in out


def test_resume_wait_exits_1_when_the_candidate_is_rolled_back() -> None:
    api = ScriptedApi(paused_at_pause_step(), [aborted()], lag=1)
    code, out = invoke(api, "resume", "--wait", "iris", "--interval", "0.01")
    assert code == ExitCode.ROLLED_BACK
    assert out.rstrip().splitlines()[-1].startswith("iris: RolledBack 2.0.0 (Aborted): rolled back;")


@pytest.mark.parametrize(
    ("final", "code", "last_line"),
    [
        pytest.param(promoted(), ExitCode.OK, "iris: Promoted 2.0.0", id="promoted: exit 0"),
        pytest.param(
            aborted(), ExitCode.ROLLED_BACK, "iris: RolledBack 2.0.0 (Aborted)", id="aborted: exit 1"
        ),
        pytest.param(
            md(phase="Invalid", message="spec.rollout: bad", conditions=conditions("Stalled", "InvalidSpec")),
            ExitCode.ROLLED_BACK,
            "iris: Invalid (InvalidSpec): spec.rollout: bad",
            id="invalid: exit 1",
        ),
    ],
)
def test_wait_exit_codes(final: ModelDeployment, code: int, last_line: str) -> None:
    stale = md(phase="Healthy", generation=3, observed=2)  # just applied: the operator has not seen it
    api = ScriptedApi(stale, [final])
    api.requested.append("x")  # start replaying `final` after the first look
    got, out = invoke(api, "wait", "iris", "--interval", "0.01")
    assert got == code
    assert out.rstrip().splitlines()[-1].startswith(last_line)
    assert "the operator has not seen generation 3 yet" in out or api.gets >= 1


def test_wait_gives_up_at_the_timeout_with_exit_3() -> None:
    code, out = invoke(
        ScriptedApi(paused_at_pause_step()), "wait", "iris", "--timeout", "0.3", "--interval", "0.05"
    )
    assert code == ExitCode.TIMEOUT
    assert "iris: still Paused after --timeout 0.3s" in out


def test_a_quiet_wait_prints_only_the_outcome() -> None:
    code, out = invoke(ScriptedApi(promoted()), "wait", "iris", "-q")
    assert (code, out.strip()) == (ExitCode.OK, "iris: Promoted 2.0.0: 2/2 replicas available")


def test_status_prints_the_view_once() -> None:
    code, out = invoke(ScriptedApi(paused_at_pause_step()), "status", "iris")
    assert code == ExitCode.OK
    assert "ModelDeployment ml/iris  Paused (Paused)" in out and "Traffic" in out and "Events" in out


def test_history_and_list_say_when_there_is_nothing() -> None:
    fresh = md(phase="Healthy", conditions=conditions("Ready", "Available"))
    assert invoke(ScriptedApi(fresh), "history", "iris") == (ExitCode.OK, "iris: no finished rollouts yet.\n")
    assert invoke(ScriptedApi(fresh), "list") == (ExitCode.OK, "No ModelDeployments in namespace ml.\n")
