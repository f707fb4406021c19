"""`security_events_total`: the security events of security.py, counted by action.

The one label takes the names of security.VOCABULARY alone, never a client or a path, so
that no request can add a series. An event is counted in the process that records it: a
worker, or for the per-client thresholds under gunicorn the master, whose file in the
metrics directory every worker's /metrics adds up. prometheus_client is imported inside the
functions: gunicorn.conf.py imports this module before PROMETHEUS_MULTIPROC_DIR is set (see
metrics_directory.py).
"""

from functools import cache
from typing import TYPE_CHECKING

from flask import Flask

from .security import VOCABULARY, security_event_recorded

if TYPE_CHECKING:
    from prometheus_client import Counter

NAME = "security_events"
DOCUMENTATION = "Security events, by OWASP vocabulary action"


def init_security_metrics(app: Flask) -> None:
    from prometheus_client import Counter

    events = Counter(NAME, DOCUMENTATION, ["action"], registry=app.extensions["metrics"].registry)
    for action in VOCABULARY:  # a series that first appears at 1 is invisible to increase()
        events.labels(action)

    def count(_sender: Flask, action: str) -> None:
        events.labels(action).inc()

    # weak=False: blinker would otherwise drop this local function once init returns.
    security_event_recorded.connect(count, app, weak=False)


def count_security_alert(action: str) -> None:
    """In the gunicorn master, for what its detector found."""
    _alerts_in_master().labels(action).inc()


@cache
def _alerts_in_master() -> "Counter":
    # Made at the first alert, after on_starting emptied the metrics directory.
    from prometheus_client import Counter

    return Counter(NAME, DOCUMENTATION, ["action"])
