"""The PromQL every built-in check shares: which series are one track's, and exact counts.

Exact counts, not `increase()`: over an analysis interval of a few scrapes, `increase()`
extrapolates each series from its first and last sample in the range, so a 5 s range at a 2 s
scrape multiplies a count by up to 2.5 and adds noise no binomial model knows about (a good
candidate was rolled back by it: 97.4 % "success" with only refused garbage on both tracks). The
counts here are differences of samples, per series: what a counter read at its last scrape minus
what it read at its last scrape before the analysis started. Every series of one pod is scraped at
the same instant, so a pod's outcomes are counted over the same requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.plan.names import Track

BASELINE_LOOKBACK = "5m"
"""How far before the analysis start a counter's last sample is looked for: Prometheus' own
staleness window, so any series scraped then is found; a series without one started later (a new
pod, or an outcome first seen) and counts from zero."""


def selector(md: ModelDeployment, track: Track | None, extra: str = "") -> str:
    """One track of this ModelDeployment (both when `track` is None): its namespace and its
    Deployments' pods, then the server's own labels. Without the first two, two ModelDeployments
    serving a model of the same name (in two namespaces, or side by side) would be judged on each
    other's traffic.

    Example: `namespace="ml",pod=~"iris-candidate-[^-]+-[^-]+",model="iris",track="candidate"`.
    `namespace` and `pod` are the labels Kubernetes service discovery (and the Prometheus
    Operator's PodMonitor) put on every pod target; pod names are `<deployment>-<hash>-<id>`.
    """
    name = md.metadata.name  # a-z, 0-9 and "-" only (the API refuses others): safe in a regex
    tracks = str(track) if track is not None else f"{Track.STABLE}|{Track.CANDIDATE}"
    pods = f"{name}-{track}" if track is not None else f"{name}-({tracks})"
    match = f'track="{track}"' if track is not None else f'track=~"{tracks}"'
    return (
        f'namespace="{md.metadata.namespace or "default"}",pod=~"{pods}-[^-]+-[^-]+",'
        f'model="{md.spec.model.name}",{match}{extra}'
    )


def counts_since(series: str, by: Sequence[str], *, since: datetime, at: datetime) -> str:
    """Exact increments of the counters `series` (a metric and its selector) from `since` to `at`,
    summed by the labels `by`.

    Per series: its last sample up to `at` (`last_over_time` over the whole span, so a pod deleted
    meanwhile still counts) minus its last sample at or before `since` (the `@` modifier, Prometheus
    2.25+); a series without a sample before `since` counts from zero; a series that went down (the
    container restarted) counts what it read last.
    """
    span = max(1, math.ceil((at - since).total_seconds()))
    now = f"last_over_time({series}[{span}s])"
    then = f"last_over_time({series}[{BASELINE_LOOKBACK}] @ {since.timestamp():.3f})"
    return f"sum by ({', '.join(by)}) ((({now} - {then}) >= 0) or ({now} * 1))"
