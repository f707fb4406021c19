"""The dashboard's panel of crossed thresholds shows the events of the service's thresholds."""

from .test_dashboard import dashboard, panels
from .test_security_metrics import actions_matched, threshold_alerts

__all__ = ["dashboard"]  # the fixture, for the test below
THRESHOLD_PANEL = "Clients over a per-client threshold"


def test_the_threshold_panel_shows_the_event_of_every_threshold_and_of_no_other(dashboard):
    [panel] = [panel for panel in panels(dashboard) if panel["title"] == THRESHOLD_PANEL]
    for target in panel["targets"]:
        assert actions_matched(target["expr"]) == threshold_alerts()
