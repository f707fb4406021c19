import time

import pytest

from {{ cookiecutter.package_name }}.views import KNOWN_ITEMS, SLOWEST_MS


def test_index_names_the_service(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.json["service"] == "{{ cookiecutter.project_slug }}"
    assert response.json["environment"] == "development"


def test_a_known_item_is_served(client):
    response = client.get("/api/items/7")
    assert response.status_code == 200
    assert response.json == {"id": 7, "name": "item 7"}


def test_an_unknown_item_is_not_found(client):
    assert client.get(f"/api/items/{KNOWN_ITEMS}").status_code == 200
    assert client.get(f"/api/items/{KNOWN_ITEMS + 1}").status_code == 404


def test_fail_answers_500(client):
    assert client.get("/api/fail").status_code == 500


def test_slow_answers_after_the_requested_delay(client):
    started = time.monotonic()
    response = client.get("/api/slow?ms=150")
    assert time.monotonic() - started >= 0.15
    assert response.status_code == 200
    assert response.json == {"slept_ms": 150}


@pytest.mark.parametrize("ms", ["0", str(SLOWEST_MS)])
def test_slow_accepts_its_bounds(client, monkeypatch, ms):
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)  # the bounds, not the wait
    assert client.get(f"/api/slow?ms={ms}").status_code == 200


@pytest.mark.parametrize(
    "query",
    ["", "?ms=", f"?ms={SLOWEST_MS + 1}", "?ms=-1", "?ms=1.5", "?ms=abc", "?ms=+5", "?ms=%205",
     "?ms=1_000", "?ms=\u00b2", "?ms=99999999999999999999999"],
)  # fmt: skip
def test_slow_refuses_anything_else_with_400(client, query):
    response = client.get(f"/api/slow{query}")
    assert response.status_code == 400
    assert f"from 0 to {SLOWEST_MS}" in response.json["error"]
