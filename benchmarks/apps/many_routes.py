"""The baked service with BENCH_ROUTES extra routes, to see /metrics grow with the routes hit."""

import importlib
import os

from flask import Flask


def create_app() -> Flask:
    service = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.app")
    app = service.create_app()
    for number in range(int(os.environ["BENCH_ROUTES"])):
        app.add_url_rule(f"/bench/route-{number}", f"bench_route_{number}", answer_ok)
    return app


def answer_ok() -> str:
    return "ok"
