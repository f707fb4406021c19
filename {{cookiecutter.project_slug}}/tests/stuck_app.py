"""The service with one more route, /stuck, that outlasts the worker timeouts the tests set.

Tests of gunicorn's worker timeout serve it with `--timeout 1`. The master notices a stuck
worker when it next gets a turn, which on a busy machine can take seconds; the request
therefore sleeps far longer than that, and a test that waits for it still ends if the
timeout never comes.
"""

import time

from flask import Flask

from {{ cookiecutter.package_name }}.app import create_app

STUCK_SECONDS = 60
APP = "tests.stuck_app:create_app_with_a_stuck_route()"  # for gunicorn's command line


def create_app_with_a_stuck_route() -> Flask:
    app = create_app()
    app.add_url_rule("/stuck", view_func=stuck)
    return app


def stuck() -> str:
    time.sleep(STUCK_SECONDS)
    return "the worker timeout did not end this request\n"
