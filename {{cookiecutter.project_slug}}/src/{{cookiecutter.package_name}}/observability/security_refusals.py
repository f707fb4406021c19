"""Requests that gunicorn refuses itself, before the app sees them, as security events.

gunicorn answers 400 to a request whose headers hold control characters (the log injection
that security.py looks for), a malformed request line or headers past its limits, and never
calls the app: without this, the most hostile requests would be the ones no event records.
Each worker's error handler is wrapped so that it reports them: a refused header is
malicious_extraneous, anything else the client got wrong input_validation_fail.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gunicorn.http import errors

if TYPE_CHECKING:
    from gunicorn.workers.base import Worker

# record(action, reason, peer address)
Record = Callable[[str, str, str], None]

HEADER_REFUSED = (errors.InvalidHeader, errors.InvalidHeaderName, errors.ObsoleteFolding)
# What the app sent wrong, or the server's configuration: not the client's doing
# (types-gunicorn 26 lacks gunicorn 27's response errors).
NOT_THE_CLIENTS = (
    errors.InvalidResponseHeader,  # type: ignore[attr-defined]
    errors.InvalidResponseHeaderName,  # type: ignore[attr-defined]
    errors.ConfigurationProblem,
)


def refusal_action(error: BaseException) -> str | None:
    """The security event of a request gunicorn refused with `error`; None for an error
    that is not the client's."""
    if not isinstance(error, errors.ParseException) or isinstance(error, NOT_THE_CLIENTS):
        return None
    return "malicious_extraneous" if isinstance(error, HEADER_REFUSED) else "input_validation_fail"


def record_refusals(worker: "Worker", record: Record) -> None:
    """Wrap the worker's error handler: each request it refuses is also `record`ed."""
    handle_error = worker.handle_error

    def handle_and_record(request: Any, client: Any, address: Any, error: BaseException) -> None:
        handle_error(request, client, address, error)
        action = refusal_action(error)
        if action is not None:
            peer = address[0] if isinstance(address, tuple) and address else ""
            # gunicorn's own words name the part refused; the value itself is left out.
            record(action, f"refused by gunicorn: {type(error).__name__}", str(peer))

    worker.handle_error = handle_and_record  # type: ignore[assignment]
