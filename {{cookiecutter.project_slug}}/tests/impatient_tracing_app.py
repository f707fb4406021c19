"""The service exporting one span per batch and giving a stalled collector little time when a
worker stops: under gunicorn, a test sees whether a stopping worker gives up on the batches
behind a stalled one, or tries each of them for the whole export timeout."""

from flask import Flask

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.observability import tracing

APP = "tests.impatient_tracing_app:create_app_giving_up_quickly()"  # for gunicorn's command line


def create_app_giving_up_quickly() -> Flask:
    tracing.EXPORT_BATCH_SIZE = 1
    tracing.EXPORT_TIMEOUT_SECONDS = 3.0  # the stop comes within it, after the first export
    tracing.STOP_GRACE_SECONDS = 0.2
    return create_app()
