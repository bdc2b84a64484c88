"""``rollwise-serve``: flags and ``ROLLWISE_*`` variables in, a running server out.

Everything that can be checked before binding the port is checked here, all at once: settings,
the feature schema and the reference file. A bad value exits with status 2 and one line per
problem naming the flag and the fix, which is what ``kubectl logs`` shows for a pod that will not
start. The model itself loads after start-up (readiness tells how that went).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

import uvicorn

from rollwise_serving.config import Settings, SettingsError, configure_logging, parse_settings
from rollwise_serving.metrics import signal_file_problems
from rollwise_serving.repository import workers_ready_dir
from rollwise_serving.transport import BoundedHttpProtocol


def check_files(settings: Settings) -> list[str]:
    problems = signal_file_problems(settings.feature_schema, settings.reference)
    ca = settings.redis_ca_file
    if ca is not None and not (ca.is_file() and os.access(ca, os.R_OK)):
        problems.append(
            f"--redis-ca-file (env ROLLWISE_REDIS_CA_FILE): {str(ca)!r} is not a readable file; "
            "point it at the PEM bundle of the CA that signed the Redis server's certificate"
        )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
        problems = check_files(settings)
        if problems:
            raise SettingsError(problems)
    except SettingsError as err:
        for problem in err.problems:
            print(f"rollwise-serve: error: {problem}", file=sys.stderr)
        print("rollwise-serve: see `rollwise-serve --help`", file=sys.stderr)
        return 2
    configure_logging(settings)  # every line scrubbed of the settings' credentials
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "lifespan": "on",
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": 10,
        # httptools with a deadline per request and header limits (transport.py); its class-level
        # limits are set by create_app, in this process and in each worker.
        "http": BoundedHttpProtocol,
    }
    if settings.workers == 1:
        from rollwise_serving.app import create_app  # noqa: PLC0415 - after logging is set up

        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return 0
    # Workers are separate processes: settings travel as env vars, metrics through files that
    # prometheus_client aggregates at scrape time (multiprocess mode), readiness through one mark
    # per loaded worker; both are wiped on every start.
    metrics_dir = settings.cache_dir / "prometheus-multiproc"
    for state in (metrics_dir, workers_ready_dir(settings)):
        shutil.rmtree(state, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ.update(settings.to_environ())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "rollwise_serving.app:create_app_from_env",
        factory=True,
        workers=settings.workers,
        **common,  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
