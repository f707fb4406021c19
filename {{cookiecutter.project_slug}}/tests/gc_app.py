"""The service with one more route, /gc: what the worker's garbage collector tracks, for the
test that a worker freezes what it has loaded (gunicorn.conf.py's post_worker_init)."""

import gc

from flask import Flask

from {{ cookiecutter.package_name }}.app import create_app

APP = "tests.gc_app:create_app_with_a_gc_route()"  # for gunicorn's command line


def create_app_with_a_gc_route() -> Flask:
    app = create_app()
    app.add_url_rule("/gc", view_func=garbage_collector)
    return app


def garbage_collector() -> dict[str, int]:
    # get_objects() leaves out the frozen objects.
    return {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
