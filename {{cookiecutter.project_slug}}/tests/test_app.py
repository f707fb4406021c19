import gc
import weakref

import flask.app

from {{ cookiecutter.package_name }}.app import MAX_KNOWN_PLAIN_FUNCTIONS


def test_flask_asks_once_per_hook_whether_it_is_a_coroutine(app, client, monkeypatch):
    asked = []

    def counting(func):
        asked.append(func)
        return False

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)
    client.get("/api/items/7")
    assert app.view_functions["views.get_item"] in asked
    asked.clear()
    client.get("/api/items/7")
    assert asked == []


async def asynchronous_view():
    return "served"


def test_a_coroutine_function_is_still_run_by_flask_as_one(app, monkeypatch):
    def run_to_completion(func):  # Flask's own needs its async extra: not installed here
        return lambda: f"{func.__name__}, run to completion"

    monkeypatch.setattr(app, "async_to_sync", run_to_completion)
    for _ in range(2):  # the second time after the first was remembered
        assert app.ensure_sync(asynchronous_view)() == "asynchronous_view, run to completion"


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self):
        return "served"


def test_an_unhashable_callable_is_run_as_flask_runs_it(app):
    callable_object = Unhashable()
    assert app.ensure_sync(callable_object) is callable_object


def test_functions_made_at_each_call_are_not_all_kept(app):
    made = []
    for number in range(3 * MAX_KNOWN_PLAIN_FUNCTIONS):
        function = make_function(number)
        made.append(weakref.ref(function))
        assert app.ensure_sync(function) is function
    del function
    gc.collect()
    kept = sum(1 for function in made if function() is not None)
    assert 0 < kept <= MAX_KNOWN_PLAIN_FUNCTIONS


def make_function(number: int):
    return lambda: number
