"""The key under which a loguru record carries a line the service has already rendered.

A line is rendered once, where it is logged, and then only written: in the master, each
sink's format function renders the record into LINE, which loguru then writes. (A worker
renders its lines and hands them to the master without loguru's formatting: see
log_relay.py.)

The key belongs to the service, not to a caller's fields: no JSON line carries it.
"""

LINE = "_line"  # the line a sink writes, put there by its format function for loguru
