"""The service with two more routes, for tests of how requests end under gunicorn.

- /stuck outlasts the worker timeouts the tests set (`--timeout 1`). The master notices a
  stuck worker when it next gets a turn, which on a busy machine can take seconds; the
  request therefore sleeps far longer than that, and a test that waits for it still ends if
  the timeout never comes.
- /stuck-reading waits for a JSON body that the test never finishes sending.
- /held answers when the test lets it: it creates `entered` in the folder HELD_REQUESTS
  names, then waits for `released` there. The test knows the request is in the view
  meanwhile, without guessing how long that takes.
"""

import os
import time
from pathlib import Path

from flask import Flask, request

from {{ cookiecutter.package_name }}.app import create_app

STUCK_SECONDS = 60
APP = "tests.stuck_app:create_app_with_a_stuck_route()"  # for gunicorn's command line


def create_app_with_a_stuck_route() -> Flask:
    app = create_app()
    app.add_url_rule("/stuck", view_func=stuck)
    app.add_url_rule("/stuck-reading", view_func=stuck_reading, methods=["POST"])
    app.add_url_rule("/held", view_func=held)
    return app


def stuck() -> str:
    time.sleep(STUCK_SECONDS)
    return "the worker timeout did not end this request\n"


def stuck_reading() -> str:
    return str(request.get_json())


def held() -> str:
    folder = Path(os.environ["HELD_REQUESTS"])
    (folder / "entered").touch()
    deadline = time.monotonic() + STUCK_SECONDS
    while not (folder / "released").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released\n"
