"""Servers on loopback for the template's tests and its benchmarks.

- `loopback`: a server process on a free port of 127.0.0.1, ready when it answers, stopped by
  its pid (and its process group, should it hang).
- `gunicorn_service`: gunicorn that way, serving a baked project or any app.
- `envelopes`: a stand-in for sentry.io that answers Sentry's envelope posts.
- `otlp`: a stand-in for an OpenTelemetry collector that answers OTLP/HTTP trace exports.

Standard library only: the benchmark runs it under a bare Python. The generated project
ships alone and keeps its own copy in its tests.
"""
