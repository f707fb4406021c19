"""The keys under which a loguru record carries lines the service has already rendered.

A line is rendered once, where it is logged, and then only written. Under gunicorn that
takes the record from a worker to the master (see log_relay.py):
- in the worker, the relay's sink renders the record for every destination ("console",
  "file") and packs the lines, with the record's level, into PACKED: the JSON array
  [level name, {destination: line}], which the sink sends to the master as one datagram;
- the master logs what arrives as an empty message at that level, the lines in RELAYED;
  its sinks write the line for their destination (see logging.py) and render nothing, so
  the master's own time, pid and message in that record are never shown.

These keys belong to the service, not to a caller's fields: no JSON line carries them.
"""

PACKED = "_packed"  # in a worker: the datagram for the master, as text
RELAYED = "_relayed"  # in the master: {destination: line}, as the worker rendered them
LINE = "_line"  # the line a sink writes, put there by its format function for loguru
