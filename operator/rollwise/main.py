"""`rollwise-operator`: read settings, serve metrics, run Kopf (in a pod or against a kubeconfig)."""

from __future__ import annotations

import logging
import sys

import kopf

from rollwise import handlers, telemetry
from rollwise.settings import OperatorSettings, SettingsError, from_env


def main(argv: list[str] | None = None) -> int:
    del argv  # every setting comes from the environment, as the chart sets it
    try:
        settings: OperatorSettings = from_env()
    except SettingsError as err:
        print(f"rollwise-operator: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    telemetry.serve(settings.metrics_port)
    # Importing handlers registered the fixed handlers; routers' watches depend on the settings.
    handlers.register_routers(settings.routers)
    ns = settings.watch_namespace
    kopf.run(
        clusterwide=not ns,
        namespaces=[n.strip() for n in ns.split(",") if n.strip()],
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        priority=settings.peering_priority,
        liveness_endpoint=settings.liveness_endpoint or None,
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
