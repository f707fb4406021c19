"""Bounded concurrent load on loopback, one unique request id per request."""

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Outcome:
    path: str
    request_id: str
    status: int | None  # None: the connection failed (a killed worker, say)


def send_all(
    base_url: str, paths: list[str], concurrency: int = 12, headers: dict | None = None
) -> list[Outcome]:
    sessions = threading.local()

    def send(path: str) -> Outcome:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        request_id = uuid.uuid4().hex
        try:
            response = sessions.session.get(
                base_url + path, headers={**(headers or {}), "X-Request-ID": request_id}, timeout=30
            )
            return Outcome(path, request_id, response.status_code)
        except requests.RequestException:  # a worker killed mid-request, say
            return Outcome(path, request_id, None)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, paths))


def status_counts(outcomes: list[Outcome]) -> Counter:
    return Counter(str(outcome.status) for outcome in outcomes if outcome.status is not None)
