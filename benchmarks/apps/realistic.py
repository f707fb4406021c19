"""An endpoint that does some work, as most do: about a millisecond of CPU in the view and a
JSON answer of a few KB. The same view in a plain Flask app (the ceiling) and in the baked
service, so that the two differ only by what the service adds around it."""

import importlib
import os

from flask import Flask, jsonify

ROWS = 60
WORK_ROUNDS = 5_000  # about a millisecond of CPU on the development machine
REPORT_PATH = "/api/reports/<int:report_id>"


def create_bare_app() -> Flask:
    app = Flask(__name__)
    app.add_url_rule(REPORT_PATH, view_func=get_report)
    return app


def create_service_app() -> Flask:
    service = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.app")
    app = service.create_app()
    app.add_url_rule(REPORT_PATH, view_func=get_report)
    return app


def get_report(report_id: int):
    checksum = 0
    for number in range(WORK_ROUNDS):
        checksum = (checksum * 31 + number * report_id) % 1_000_003
    rows = [
        {"id": row, "name": f"row {row} of report {report_id}", "score": (checksum + row) % 997}
        for row in range(ROWS)
    ]
    return jsonify(id=report_id, checksum=checksum, rows=rows)
