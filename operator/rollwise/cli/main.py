"""`kubectl rollwise` (and `rollwise`): arguments, commands and exit codes.

Actions (pause, resume, promote, abort, retry) set the `rollwise.dev/action` annotation with a
fresh nonce, so the same command twice is two requests, then wait until the operator records it
in `status.lastAction`: the command prints what the operator made of it, and `--wait` judges the
rollout's end from a status written after the action, never from the one before it.

Exit codes (`outcome.ExitCode`): 0 done / promoted, 1 rolled back / aborted / failed, 2 usage or
not found, 3 timeout.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.text import Text

from rollwise.api.actions import ACTION_ANNOTATION, Action
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.cli.batch_view import batch_view
from rollwise.cli.client import DIFF_TIMEOUT_SECONDS, Client, CliError, Target
from rollwise.cli.live import Followed, Snapshot, follow
from rollwise.cli.outcome import Ended, ExitCode, ended, refusal
from rollwise.cli.shadow import diff_view
from rollwise.cli.view import history_table, list_table, progress_line, status_view

PROG = "kubectl rollwise"
ACK_TIMEOUT_SECONDS = 30.0
"""How long an action waits for the operator to record it; the operator reacts within a second
or two when it runs, so a longer silence means it is not running or not watching the namespace."""
LOG_WIDTH = 160
"""Columns for output that is not a terminal (CI logs, pipes), unless COLUMNS says otherwise."""
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def duration_seconds(text: str) -> float:
    """kubectl-style durations: `90`, `90s`, `5m`, `1h30m`."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90, 90s, 5m or 1h30m")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def positive_seconds(text: str) -> float:
    value = duration_seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


# ---------------------------------------------------------------------------------------------
# Arguments


def _connection_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """kubectl's flags, accepted before or after the command (`kubectl rollwise -n ns status x`).

    On subcommands the defaults are SUPPRESS so a flag given before the command is not reset."""
    default: object = None if top else argparse.SUPPRESS
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's, else default)"
    )


def _wait_flags(parser: argparse.ArgumentParser, *, wait_flag: bool = True) -> None:
    if wait_flag:
        parser.add_argument(
            "--wait",
            action="store_true",
            help="block until the rollout ends: exit 0 promoted, 1 rolled back or failed, 3 on --timeout",
        )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=None, help="give up after this long (90s, 5m); exit 3"
    )
    parser.add_argument(
        "--interval", type=positive_seconds, default=1.0, help="seconds between refreshes (default 1)"
    )


def build_parser(*, with_demo: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG if not with_demo else "rollwise",
        description="Watch and steer Rollwise ModelDeployment rollouts.",
        epilog="Exit codes: 0 ok/promoted, 1 rolled back/aborted/failed, 2 usage or not found, 3 timeout.",
    )
    _connection_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = argparse.ArgumentParser(add_help=False)
    _connection_flags(parent, top=False)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[parent])

    p = command("list", "list ModelDeployments with their phase, versions, step and weight")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list in every namespace")

    p = command("status", "show a rollout: steps, traffic split, analysis, recent Events")
    p.add_argument("name")
    p.add_argument("-w", "--watch", action="store_true", help="keep the view live until Ctrl-C")
    p.add_argument("--events", type=int, default=8, metavar="N", help="Events to show (default 8)")
    _wait_flags(p)

    p = command("wait", "block until the rollout ends; exit 0 promoted, 1 rolled back, 3 timeout")
    p.add_argument("name")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the outcome")
    _wait_flags(p, wait_flag=False)

    for verb, text, waits in [
        ("promote", "skip the current step (--full: skip every step) and go on", True),
        ("abort", "roll back now: all traffic to stable, the candidate to zero", False),
        ("pause", "hold the rollout at its current step", False),
        ("resume", "continue a paused rollout (past a `pause: {}` step)", True),
        ("retry", "start a rolled-back candidate again from its first step", True),
    ]:
        p = command(verb, text)
        p.add_argument("name")
        if verb == "promote":
            p.add_argument("--full", action="store_true", help="skip all remaining steps: promote now")
        _wait_flags(p, wait_flag=waits)

    p = command("batch", "show a ModelBatchJob's progress: shards, rows, throughput, failures by index")
    p.add_argument("name")
    p.add_argument("--all", action="store_true", help="list every shard, succeeded ones included")

    p = command("history", "finished rollouts, newest first")
    p.add_argument("name")

    p = command("diff", "shadow: the last rows where the candidate answered otherwise than stable")
    p.add_argument("name")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DIFF_TIMEOUT_SECONDS,
        help=f"give up on the stable pod after this long (default {DIFF_TIMEOUT_SECONDS:g}s); exit 3",
    )

    if with_demo:
        p = command("demo", "run the local demo (python -m e2e.demo) from a Rollwise checkout")
    return parser


# ---------------------------------------------------------------------------------------------
# Commands


class App:
    """One invocation: the parsed arguments, a console and a lazily connected client."""

    def __init__(self, args: argparse.Namespace, console: Console, client: Client | None = None) -> None:
        self.args = args
        self.console = console
        self._client = client

    @property
    def client(self) -> Client:
        if self._client is None:
            args = self.args
            target = Target(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
            self._client = Client.connect(target)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def snapshot(self, name: str) -> Snapshot:
        md = self.client.get(name)
        return md, self.client.events(md)

    def follow(
        self, name: str, until: Callable[[ModelDeployment], bool] | None, *, quiet: bool = False
    ) -> Followed:
        events_limit = getattr(self.args, "events", 8)
        if quiet:
            return self._poll(name, until)
        return follow(
            lambda: self.snapshot(name),
            self.console,
            until=until,
            timeout_seconds=self.args.timeout,
            interval_seconds=self.args.interval,
            events_limit=events_limit,
        )

    def _poll(self, name: str, until: Callable[[ModelDeployment], bool] | None) -> Followed:
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        while True:
            md = self.client.get(name)
            if until is not None and until(md):
                return Followed(md, (), True)
            if deadline is not None and time.monotonic() >= deadline:
                return Followed(md, (), False)
            time.sleep(self.args.interval)

    def finish(self, followed: Followed) -> int:
        """The exit code of a wait, with a last line saying how the rollout ended."""
        name = followed.md.metadata.name
        result = ended(followed.md)
        if result is None:
            self.console.print(
                Text(
                    f"{name}: still {followed.md.status.phase or 'unreconciled'} after "
                    f"--timeout {self.args.timeout:g}s; {progress_line(followed.md, self.now())}",
                    style="yellow",
                ),
                soft_wrap=True,
            )
            return ExitCode.TIMEOUT
        self.console.print(outcome_text(followed.md, result), soft_wrap=True)
        return result.exit_code

    # -----------------------------------------------------------------------------------------

    def cmd_list(self) -> int:
        namespace = None if self.args.all_namespaces else self.client.namespace
        mds = self.client.list_all(namespace)
        if not mds:
            where = "any namespace" if namespace is None else f"namespace {namespace}"
            self.console.print(f"No ModelDeployments in {where}.", highlight=False)
            return ExitCode.OK
        self.console.print(list_table(mds, self.now(), all_namespaces=namespace is None))
        return ExitCode.OK

    def cmd_status(self) -> int:
        name = self.args.name
        if self.args.wait:
            return self.finish(self.follow(name, lambda md: ended(md) is not None))
        if self.args.watch:
            self.follow(name, None)
            return ExitCode.OK
        md, events = self.snapshot(name)
        self.console.print(status_view(md, events, self.now(), events_limit=self.args.events))
        return ExitCode.OK

    def cmd_wait(self) -> int:
        return self.finish(
            self.follow(self.args.name, lambda md: ended(md) is not None, quiet=self.args.quiet)
        )

    def cmd_batch(self) -> int:
        mbj = self.client.get_batch_job(self.args.name)
        self.console.print(batch_view(mbj, self.now(), all_shards=self.args.all))
        return ExitCode.OK

    def cmd_history(self) -> int:
        md = self.client.get(self.args.name)
        if not md.status.history:
            self.console.print(f"{md.metadata.name}: no finished rollouts yet.", highlight=False)
            return ExitCode.OK
        self.console.print(history_table(md, self.now()))
        return ExitCode.OK

    def cmd_diff(self) -> int:
        md = self.client.get(self.args.name)
        diff = self.client.shadow_diff(md, timeout_seconds=self.args.timeout)
        self.console.print(diff_view(md.metadata.name, diff, self.now()))
        return ExitCode.OK

    def cmd_action(self, action: Action) -> int:
        name = self.args.name
        md = self.client.get(name)
        why_not = refusal(md, action)
        if why_not is not None:
            raise CliError(why_not)
        value = f"{action.value}:{int(time.time())}-{secrets.token_hex(2)}"
        self.client.request_action(md, value)
        where = f"{md.metadata.namespace}/{name}"
        self.console.print(f"{where}: requested {action.value} ({ACTION_ANNOTATION}={value})")
        acked = self._acknowledged(name, value)
        self.console.print(Text(progress_line(acked, self.now())), soft_wrap=True)
        if not getattr(self.args, "wait", False):
            return ExitCode.OK
        return self.finish(self.follow(name, lambda m: ended(m) is not None))

    def _acknowledged(self, name: str, value: str) -> ModelDeployment:
        """The object once the operator recorded `value` in status.lastAction."""
        timeout = self.args.timeout
        limit = ACK_TIMEOUT_SECONDS if timeout is None else min(timeout, ACK_TIMEOUT_SECONDS)
        deadline = time.monotonic() + limit
        while True:
            md = self.client.get(name)
            if md.status.last_action == value:
                return md
            if time.monotonic() >= deadline:
                raise CliError(
                    f"{md.metadata.namespace}/{name}: the operator has not taken up {value!r} within "
                    f"{limit:g}s; is it running and watching namespace {md.metadata.namespace}? "
                    "(`kubectl -n rollwise-system get pods`; the annotation stays, it acts once it runs)",
                    ExitCode.TIMEOUT,
                )
            time.sleep(min(0.5, self.args.interval))


def outcome_text(md: ModelDeployment, result: Ended) -> Text:
    """The last line of a wait: how it ended and why, coloured by success."""
    s = md.status
    ok = result.exit_code == ExitCode.OK
    version = s.stable_version if ok else (s.history[0].version if s.history else "")
    style = "bold green" if ok else "bold red"
    text = Text(f"{md.metadata.name}: {result.outcome.value}", style=style)
    if version:
        text.append(f" {version}", style=style)
    if result.reason and result.reason != result.outcome.value:
        text.append(f" ({result.reason})")
    if result.message:
        text.append(f": {result.message}")
    return text


# ---------------------------------------------------------------------------------------------
# Entry points


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else LOG_WIDTH
    return Console(stderr=stderr, width=width, highlight=False)


def _demo() -> int:
    """`rollwise demo`: the checkout's demo, which needs the repository's e2e/ harness."""
    here = Path(__file__).resolve().parents[3]
    for root in (here, Path.cwd(), *Path.cwd().parents):
        if (root / "e2e" / "demo.py").is_file():
            return subprocess.run([sys.executable, "-m", "e2e.demo"], cwd=root, check=False).returncode
    raise CliError(
        "rollwise demo runs from a Rollwise checkout (it needs e2e/demo.py); cd into the clone "
        "and run it again, or run `make demo` there"
    )


def run(
    argv: Sequence[str] | None,
    *,
    with_demo: bool,
    client: Client | None = None,
    console: Console | None = None,
) -> int:
    """Parse, dispatch, and turn a `CliError` into its one-line message and exit code."""
    args = build_parser(with_demo=with_demo).parse_args(argv)
    out = console or _console()
    err_console = console or _console(stderr=True)
    app = App(args, out, client)
    try:
        match args.command:
            case "demo":
                return _demo()
            case "list":
                return app.cmd_list()
            case "status":
                return app.cmd_status()
            case "wait":
                return app.cmd_wait()
            case "history" | "batch":  # one read, one view
                return int(app.cmd_history() if args.command == "history" else app.cmd_batch())
            case "diff":
                return app.cmd_diff()
            case "promote":
                return app.cmd_action(Action.PROMOTE_FULL if args.full else Action.PROMOTE)
            case verb:
                return app.cmd_action(Action(verb))
    except CliError as err:
        err_console.print(Text(f"error: {err}", style="red"), soft_wrap=True)
        return err.code
    except KeyboardInterrupt:
        # --watch ends with Ctrl-C by design; an interrupted --wait did not see the end.
        return ExitCode.OK if getattr(args, "watch", False) and not getattr(args, "wait", False) else 130
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-rollwise`: kubectl finds it on PATH as the `rollwise` plugin."""
    return run(argv, with_demo=False)


def rollwise_main(argv: Sequence[str] | None = None) -> int:
    """`rollwise`: the same commands, plus `rollwise demo` from a checkout."""
    return run(argv, with_demo=True)


if __name__ == "__main__":
    sys.exit(main())
