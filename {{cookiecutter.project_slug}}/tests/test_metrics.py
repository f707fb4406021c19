import re

from {{ cookiecutter.package_name }}.app import create_app

from .conftest import get, make_settings


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one series, 0 when it does not exist yet."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(name + r"\{(.*)\} (\S+)$", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in labels.items()):
            total += float(match.group(2))
    return total


def scrape(client) -> str:
    return client.get("/metrics").get_data(as_text=True)


def test_requests_are_counted_by_status_and_route(client):
    for item_id in range(1, 6):
        client.get(f"/api/items/{item_id}")
    client.get("/api/items/5000")
    client.get("/api/fail")
    text = scrape(client)
    assert sample(text, "flask_http_request_total", status="200") == 5
    assert sample(text, "flask_http_request_total", status="404") == 1
    assert sample(text, "flask_http_request_total", status="500") == 1
    assert sample(
        text, "flask_http_request_duration_seconds_count",
        url_rule="/api/items/<int:item_id>", status="200",
    ) == 5  # fmt: skip


def test_distinct_urls_do_not_make_distinct_series(client):
    for item_id in range(300):
        client.get(f"/api/items/{item_id}")
    for number in range(50):
        client.get(f"/wp-admin/{number}.php")
    series = [
        line for line in scrape(client).splitlines()
        if line.startswith("flask_http_request_duration_seconds_count")
    ]  # fmt: skip
    assert len(series) == 2  # the items route, and every unknown URL together


def test_probes_and_scrapes_are_not_counted(client):
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        client.get(path)
    assert sample(scrape(client), "flask_http_request_total") == 0


def test_each_app_in_a_process_has_working_metrics():
    first = create_app(make_settings()).test_client()
    second = create_app(make_settings()).test_client()
    first.get("/")
    second.get("/")
    second.get("/")
    assert sample(scrape(first), "flask_http_request_total") == 1
    assert sample(scrape(second), "flask_http_request_total") == 2


def test_counts_are_exact_across_gunicorn_workers(gunicorn):
    server = gunicorn(workers=3)
    for item_id in range(120):
        assert get(f"{server.url}/api/items/{item_id}")[0] == 200
    for _ in range(30):
        get(f"{server.url}/api/fail")
    text = get(f"{server.url}/metrics")[2].decode()
    assert sample(text, "flask_http_request_total", status="200") == 120
    assert sample(text, "flask_http_request_total", status="500") == 30
    assert sample(text, "flask_http_request_duration_seconds_count", status="500") == 30
