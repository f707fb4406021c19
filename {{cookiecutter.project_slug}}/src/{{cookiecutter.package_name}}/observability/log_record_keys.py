"""The keys under which a loguru record carries a line the service has already rendered.

A line is rendered once, where it is logged, and then only written. Under gunicorn that
takes the record from a worker to the master (see log_relay.py): in the worker, the
relay's sink renders the record for every destination ("console", "file") and packs the
lines, with the record's level, into PACKED, which the sink sends to the master in a
datagram, alone or with the other lines of a request. The master writes those lines to
its sinks as they are (logging.write_rendered).

These keys belong to the service, not to a caller's fields: no JSON line carries them.
"""

PACKED = "_packed"  # in a worker: the packed record for the master, as text
LINE = "_line"  # the line a sink writes, put there by its format function for loguru
