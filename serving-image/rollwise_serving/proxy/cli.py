"""``rollwise-proxy``: the signals proxy in front of any model server (``proxy/app.py``).

Like ``rollwise-serve``, every problem with the flags is reported at once, each naming the flag
and the fix, with exit status 2; the feature schema and reference are read before the port is
bound. One process: the proxy's work is I/O, and one event loop keeps its metrics in one place.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvicorn

from rollwise_serving.config import SettingsError
from rollwise_serving.metrics import signal_file_problems
from rollwise_serving.proxy.config import parse_proxy_settings
from rollwise_serving.transport import BoundedHttpProtocol, Limits


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_proxy_settings(argv)
        problems = signal_file_problems(settings.feature_schema, settings.reference)
        if problems:
            raise SettingsError(problems)
    except SettingsError as err:
        for problem in err.problems:
            print(f"rollwise-proxy: error: {problem}", file=sys.stderr)
        print("rollwise-proxy: see `rollwise-proxy --help`", file=sys.stderr)
        return 2
    from rollwise_serving.proxy.app import ProxyApp  # noqa: PLC0415 - after the flags are checked

    # the same bounded HTTP/1.1 as the bundled server: per-request deadline, header limits
    BoundedHttpProtocol.limits = Limits(
        request_timeout_seconds=settings.request_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
    )
    uvicorn.run(
        ProxyApp(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        server_header=False,
        date_header=False,
        proxy_headers=False,  # X-Forwarded-* go on to the upstream as they came; the proxy reads none
        timeout_graceful_shutdown=10,
        http=BoundedHttpProtocol,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
