"""Requests ended by gunicorn's worker timeout, amid load: each one found by its request id."""

import json
import threading

from .load import send_all
from .service import GunicornService

# The generated project's test app: its /stuck route outlasts the timeout below by far, so
# that the master has a turn to notice however busy the machine.
STUCK_APP = "tests.stuck_app:create_app_with_a_stuck_route()"
STUCK_REQUESTS = 3


def test_timed_out_requests_are_logged_counted_and_reported_once(baked, tmp_path, envelopes):
    sentry = envelopes()
    service = GunicornService(baked("all-defaults"), tmp_path, workers=3, app=STUCK_APP,
                              GUNICORN_TIMEOUT="1", SENTRY_DSN=sentry.dsn).start()  # fmt: skip
    try:
        normal = []
        load = threading.Thread(
            target=lambda: normal.extend(send_all(service.url, ["/api/items/1"] * 300, 4))
        )
        load.start()
        stuck = send_all(service.url, ["/stuck"] * STUCK_REQUESTS, concurrency=1)
        load.join()
        timeouts = service.metric("flask_http_request_timeouts_total", url_rule="/stuck")
    finally:
        service.stop()  # workers send what Sentry events they hold before they exit

    assert [outcome.status for outcome in stuck] == [500] * STUCK_REQUESTS
    # Requests that waited on a stuck worker's socket may have been cut off with it.
    assert sum(outcome.status == 200 for outcome in normal) >= len(normal) - STUCK_REQUESTS
    assert timeouts == STUCK_REQUESTS

    stuck_ids = {outcome.request_id for outcome in stuck}
    records = [json.loads(line) for line in (service.log_dir / "service.log").open()]
    timeout_lines = [r for r in records if r["message"].startswith("request timed out")]
    assert {r["http.request.id"] for r in timeout_lines} == stuck_ids
    assert len(timeout_lines) == STUCK_REQUESTS
    assert {r["http.route"] for r in timeout_lines} == {"/stuck"}
    access_ids = {r.get("http.request.id") for r in records if r["log.logger"] == "gunicorn.access"}
    assert stuck_ids <= access_ids
    assert not [r for r in records if "Error handling request" in r["message"]]

    events = sentry.items("event")
    assert [event["exception"]["values"][-1]["type"] for event in events] == [
        "RequestTimeout"
    ] * STUCK_REQUESTS, "one event per timeout, and none named SystemExit"
    assert {event["tags"]["request_id"] for event in events} == stuck_ids
