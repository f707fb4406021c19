"""Security events: recorded with no code of the app's, by the app's one call, and with the
client as far as the trusted proxies tell."""

import secrets
from http import HTTPStatus

import pytest
from flask import abort

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability.health import (
    register_polled_path,
)
from {{ cookiecutter.package_name }}.observability.security import (
    MAX_USER_NAME,
    VOCABULARY,
    security_event,
)
from {{ cookiecutter.package_name }}.settings import (
    SettingsError,
    load_settings,
)

from .conftest import capture_log_records, make_settings

TOKEN = secrets.token_urlsafe(32)
PEER = "127.0.0.1"  # the test client's address


def security_records(records: list[dict]) -> list[dict]:
    return [record for record in records if "event.action" in record]


def actions(records: list[dict]) -> list[str]:
    return [record["event.action"] for record in security_records(records)]


@pytest.fixture
def app():
    """The service, with routes that answer what a real app's views would."""
    app = create_app(make_settings(api_token=TOKEN))
    for status in (400, 401, 403, 413, 422):
        app.add_url_rule(f"/answers/{status}", f"answers_{status}", lambda s=status: abort(s))

    @app.post("/login")
    def login():
        security_event("authn_login_fail", user=app.config["USER_NAME"], reason="wrong password")
        abort(401)

    @app.get("/actuator/health")  # a route of the app's own, on a path scanners probe
    def actuator_health():
        return "up"

    app.config["USER_NAME"] = "alice"
    return app


@pytest.mark.parametrize(
    ("status", "action", "category", "event_type"),
    [
        (400, "input_validation_fail", ["web"], ["error"]),
        (401, "authn_login_fail", ["authentication"], ["start"]),
        (403, "authz_fail", ["web"], ["access"]),
        (413, "input_validation_fail", ["web"], ["error"]),
        (422, "input_validation_fail", ["web"], ["error"]),
    ],
)
def test_an_answer_that_refuses_a_request_is_a_security_event(
    client, capsys, status, action, category, event_type
):
    log_records = capture_log_records(capsys)
    response = client.get(f"/answers/{status}", headers={"X-Request-ID": "refused-1"})
    assert response.status_code == status
    [event] = security_records(log_records())
    assert event["event.action"] == action
    assert event["event.kind"] == "event"
    assert event["event.category"] == category
    assert event["event.type"] == event_type
    assert event["event.outcome"] == "failure"
    assert event["event.reason"] == f"answered {status} {HTTPStatus(status).phrase}"
    assert event["client.ip"] == PEER
    assert event["url.path"] == f"/answers/{status}"
    assert event["http.request.id"] == "refused-1"
    assert len(event["trace.id"]) == 32
    assert event["log.level"] == "warning"


def test_a_method_no_route_takes_is_rejected_input(client, capsys):
    log_records = capture_log_records(capsys)
    assert client.post("/api/items/3").status_code == 405
    [event] = security_records(log_records())
    assert event["event.action"] == "input_validation_fail"
    assert event["http.request.method"] == "POST"


def test_a_view_that_rejects_its_input_needs_no_code_for_the_event(client, capsys):
    log_records = capture_log_records(capsys)
    assert client.get("/api/slow?ms=lots").status_code == 400
    assert actions(log_records()) == ["input_validation_fail"]


def test_answers_that_refuse_nothing_are_no_security_events(client, capsys):
    log_records = capture_log_records(capsys)
    assert client.get("/api/items/7").status_code == 200
    assert client.get("/api/items/5000").status_code == 404  # one 404 is no event, many are
    assert client.get("/api/fail").status_code == 500
    assert actions(log_records()) == []


@pytest.mark.parametrize(
    "path", ["/.env", "/.env.production", "/.git/config", "/wp-login.php", "/WP-ADMIN/setup.php"]
)
def test_a_path_that_scanners_probe_is_an_alert(client, capsys, path):
    log_records = capture_log_records(capsys)
    assert client.get(path).status_code == 404
    [event] = security_records(log_records())
    assert event["event.action"] == "malicious_direct_reference"
    assert event["event.kind"] == "alert"
    assert event["event.category"] == ["intrusion_detection"]
    assert event["event.type"] == ["denied"]
    assert event["url.path"] == path
    assert event["client.ip"] == PEER


def test_a_probed_path_that_the_app_serves_is_no_probe(client, capsys):
    log_records = capture_log_records(capsys)
    assert client.get("/actuator/health").status_code == 200
    assert actions(log_records()) == []


def test_control_characters_in_a_header_are_an_alert_naming_the_header(client, capsys):
    log_records = capture_log_records(capsys)
    response = client.get("/", headers={"User-Agent": "curl\x1b[2J", "X-Note": "a\x00b"})
    assert response.status_code == 200
    [event] = security_records(log_records())
    assert event["event.action"] == "malicious_extraneous"
    assert event["event.kind"] == "alert"
    assert event["http.request.header_names"] == ["User-Agent", "X-Note"]
    assert "curl" not in event["message"], "no value the client chose"


def test_a_tab_in_a_header_is_allowed(client, capsys):
    log_records = capture_log_records(capsys)
    client.get("/", headers={"User-Agent": "some\tclient"})
    assert actions(log_records()) == []


@pytest.mark.parametrize("request_id", ["a" * 129, "id with spaces", '"quoted"'])
def test_a_request_id_that_is_replaced_is_rejected_input(client, capsys, request_id):
    log_records = capture_log_records(capsys)
    client.get("/", headers={"X-Request-ID": request_id})
    [event] = security_records(log_records())
    assert event["event.action"] == "input_validation_fail"
    assert event["event.reason"] == "X-Request-ID refused and replaced"


@pytest.mark.parametrize("request_id", ["order-42.retry_1", ""])
def test_a_safe_or_empty_request_id_is_no_event(client, capsys, request_id):
    log_records = capture_log_records(capsys)
    client.get("/", headers={"X-Request-ID": request_id})
    assert actions(log_records()) == []


def test_the_app_records_its_own_event_with_the_user_once(client, capsys):
    log_records = capture_log_records(capsys)
    assert client.post("/login").status_code == 401
    [event] = security_records(log_records())  # the view's, not also the answer's
    assert event["event.action"] == "authn_login_fail"
    assert event["event.reason"] == "wrong password"
    assert event["user.name"] == "alice"
    assert event["client.ip"] == PEER


def test_failed_logins_up_to_the_limit_are_an_alert_on_their_client(capsys):
    client = create_app(make_settings(api_token=TOKEN, security_login_fail_limit=3)).test_client()
    log_records = capture_log_records(capsys)
    for _ in range(3):
        client.get("/api/private", headers={"Authorization": "Bearer wrong"})
    records = security_records(log_records())
    assert actions(records) == ["authn_login_fail"] * 3 + ["authn_login_fail_max"]
    assert records[0]["message"] == f"security event authn_login_fail from {PEER}: wrong token"
    assert records[-1]["client.ip"] == PEER


def test_an_event_recorded_without_a_reason_has_an_empty_one(app, capsys):
    @app.get("/reports/<int:report_id>")
    def report(report_id: int):
        security_event("authz_fail")
        return "not yours", 200

    log_records = capture_log_records(capsys)
    app.test_client().get("/reports/7")
    [event] = security_records(log_records())
    assert event["event.reason"] == ""


def test_a_user_name_of_the_attackers_choosing_is_cut(app, capsys):
    log_records = capture_log_records(capsys)
    app.config["USER_NAME"] = "x" * 100_000
    app.test_client().post("/login")
    [event] = security_records(log_records())
    assert event["user.name"] == "x" * MAX_USER_NAME


def test_an_action_outside_the_vocabulary_is_refused(app):
    with app.test_request_context("/"), pytest.raises(ValueError, match="vocabulary"):
        security_event("something_odd")


def test_every_action_has_its_ecs_categorisation():
    for action, categorisation in VOCABULARY.items():
        assert categorisation.kind in ("event", "alert"), action
        assert categorisation.outcome in ("success", "failure", "unknown"), action
        assert categorisation.category and categorisation.type, action


def test_the_private_endpoint_answers_the_right_token(client, capsys):
    log_records = capture_log_records(capsys)
    response = client.get("/api/private", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert actions(log_records()) == []


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "no bearer token"),
        (f"Basic {TOKEN}", "no bearer token"),
        ("Bearer wrong", "wrong token"),
        (f"Bearer {TOKEN}x", "wrong token"),
        ("Bearer caf\u00e9", "wrong token"),  # not ASCII: compare_digest would raise on text
    ],
    # Not the random token: a test's id must be the same in every run (xdist, mutmut).
    ids=["none", "basic", "wrong", "token-and-more", "not-ascii"],
)
def test_the_private_endpoint_refuses_anything_else_as_a_failed_login(
    client, capsys, authorization, reason
):
    log_records = capture_log_records(capsys)
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/api/private", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    [event] = security_records(log_records())
    assert event["event.action"] == "authn_login_fail"
    assert event["event.reason"] == reason


def test_without_a_token_set_the_private_endpoint_lets_nobody_in(capsys):
    client = create_app(make_settings()).test_client()
    log_records = capture_log_records(capsys)
    assert client.get("/api/private", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/api/private", headers={"Authorization": "Bearer None"}).status_code == 401
    assert actions(log_records()) == ["authn_login_fail", "authn_login_fail"]


def client_ip_of_a_probe(hops: int, forwarded_for: str, capsys) -> str:
    client = create_app(make_settings(trusted_proxy_hops=hops)).test_client()
    log_records = capture_log_records(capsys)
    client.get("/.env", headers={"X-Forwarded-For": forwarded_for})
    [event] = security_records(log_records())
    return event["client.ip"]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(capsys):
    assert client_ip_of_a_probe(0, "198.51.100.7", capsys) == PEER


def test_with_one_trusted_proxy_the_address_it_appended_is_the_client(capsys):
    # The client wrote 198.51.100.7 itself; the proxy appended the address it saw.
    assert client_ip_of_a_probe(1, "198.51.100.7, 203.0.113.9", capsys) == "203.0.113.9"


def test_a_forwarded_address_that_is_no_address_is_unknown(capsys):
    assert client_ip_of_a_probe(1, "198.51.100.7, <script>", capsys) == "unknown"


def test_a_spoofed_x_forwarded_for_cannot_hide_a_scan(capsys):
    client = create_app(make_settings(security_404_limit=5)).test_client()
    log_records = capture_log_records(capsys)
    for attempt in range(5):
        client.get(f"/nothing/{attempt}", headers={"X-Forwarded-For": f"192.0.2.{attempt}"})
    [alert] = security_records(log_records())
    assert alert["event.action"] == "malicious_excess_404"
    assert alert["client.ip"] == PEER


def test_404s_on_a_path_that_machines_poll_are_no_scan(capsys):
    """A scraper left pointing at a path that has moved to another port, say."""
    app = create_app(make_settings(security_404_limit=5))
    register_polled_path(app, "/scraped")
    log_records = capture_log_records(capsys)
    for _ in range(10):
        assert app.test_client().get("/scraped").status_code == 404
    assert actions(log_records()) == []


def test_hostile_paths_and_headers_keep_every_log_line_whole(client, capsys):
    log_records = capture_log_records(capsys)
    # Raw, as a lax server would pass them on: the test client refuses line breaks in headers.
    hostile = {"HTTP_USER_AGENT": 'x\r\n{"forged": true}', "HTTP_X_REQUEST_ID": "y" * 5000}
    client.get("/.env%0a%7B%22forged%22%3A1%7D%0d", environ_overrides=hostile)
    client.get("/.git/%ff%00\u202e", environ_overrides=hostile)  # not UTF-8, a NUL, a bidi mark
    records = log_records()  # every line parses as one JSON object
    assert "forged" not in {key for record in records for key in record}
    assert actions(records) == [
        "malicious_extraneous",
        "malicious_extraneous",
        "malicious_direct_reference",
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRUSTED_PROXY_HOPS", "-1"),
        ("TRUSTED_PROXY_HOPS", "many"),
        ("SECURITY_404_LIMIT", "0"),
        ("SECURITY_LOGIN_FAIL_WINDOW_SECONDS", "a minute"),
        ("SECURITY_TRACKED_CLIENTS", "5"),
    ],
)
def test_a_bad_security_setting_is_named_in_one_line(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert f"{variable}={value!r}" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_api_token_is_a_secret_in_the_settings(monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    settings = load_settings()
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == TOKEN
