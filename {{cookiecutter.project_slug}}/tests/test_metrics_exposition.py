"""A scrape is byte for byte what prometheus_client would write, in each format Prometheus and
people ask for, as series come, change and go between scrapes."""

import pytest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Exemplar, NativeHistogram, Sample

from {{ cookiecutter.package_name }}.observability import metrics_exposition

# What Prometheus sends when it scrapes (its default scrape_protocols): OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPT_HEADERS = [
    None,  # curl or a browser: the plain text format
    PROMETHEUS_ACCEPT,
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=values",
    "application/openmetrics-text; version=2.0.0",  # native histograms
]
# Label values a route or an exception may give: quotes, backslashes, a newline, not ASCII.
AWKWARD = ['/say/"hi"', "C:\\temp", "two\nlines", "/café"]
ODD_VALUES = {"big": 1.5e21, "tiny": 3e-9, "inf": float("inf"), "nan": float("nan")}


class Families:
    """A collector of the metric families a test builds, as the multiprocess one yields them."""

    def __init__(self, *families):
        self.families = list(families)

    def collect(self):
        return self.families


def requests_counted(counts: dict[tuple[str, str], float]) -> CounterMetricFamily:
    family = CounterMetricFamily("http_requests", "Requests, by path and status.",
                                 labels=["path", "status"])  # fmt: skip
    for (path, status), count in counts.items():
        family.add_metric([path, status], count)
    return family


def durations(total: float) -> HistogramMetricFamily:
    family = HistogramMetricFamily("http_duration_seconds", "Durations.", labels=["path"])
    for path in AWKWARD:
        buckets = [("0.1", total / 4), ("1.0", total / 2), ("+Inf", total)]
        family.add_metric([path], buckets, sum_value=total * 0.25)
    return family


def every_kind(count: float) -> Families:
    summary = SummaryMetricFamily("queue_wait_seconds", "Waits.", count_value=count, sum_value=1.5)
    info = InfoMetricFamily("build", "The build.", value={"version": "1.2.3", "commit": "abc"})
    in_flight = GaugeMetricFamily("in_flight", 'A "quoted" help\non two lines.', value=count / 7)
    huge = GaugeMetricFamily("odd", "Large, small and no numbers.", labels=["kind"])
    for kind, value in ODD_VALUES.items():
        huge.add_metric([kind], value)
    counts = {(path, "200"): count + number for number, path in enumerate(AWKWARD)}
    return Families(requests_counted(counts), durations(count), summary, info, in_flight, huge)


def same_as_the_library(accept: str | None, collector) -> bytes:
    encode, content_type = metrics_exposition.encoder_for(accept)
    library, library_content_type = choose_encoder(accept or "")
    written = encode(collector)
    assert written == library(collector)
    assert content_type == library_content_type
    return written


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_each_scrape_is_what_the_library_writes_as_series_come_change_and_go(accept):
    first = same_as_the_library(accept, every_kind(3))
    assert '{path="/café",status="200"}' in first.decode()

    changed = every_kind(1e6)
    counts = {("/a", "200"): 5, ("/a", "500"): 1}  # the AWKWARD series gone, two new
    changed.families[0] = requests_counted(counts)
    same_as_the_library(accept, changed)

    same_as_the_library(accept, every_kind(3))  # the series that went are back


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_samples_with_a_timestamp_or_an_exemplar_are_written_as_the_library_writes_them(
    accept,
):
    stamped = GaugeMetricFamily("temperature", "With a timestamp.", labels=["room"])
    stamped.add_metric(["hall"], 19.5, timestamp=1_700_000_000.25)
    picked = CounterMetricFamily("jobs", "With an exemplar.", labels=["queue"])
    picked.add_metric(["mail"], 4, exemplar=Exemplar({"trace_id": "abc"}, 1.0, 1_700_000_000))
    # _created samples, which the plain text format moves after the others.
    created = CounterMetricFamily("logins", "With their creation time.", labels=["kind"])
    created.add_metric(["password"], 7, created=1_700_000_000.5)
    created.add_metric(["token"], 2, created=1_700_000_100.5)
    plain = requests_counted({("/", "200"): 2})
    for _ in range(2):
        same_as_the_library(accept, Families(stamped, plain, picked, created))


@pytest.mark.parametrize("accept", [h for h in ACCEPT_HEADERS if h and "openmetrics" in h])
def test_native_histograms_are_written_as_the_library_writes_them(accept):
    """(Only OpenMetrics writes them: from version 2.0.0, and older versions leave them out.)"""
    native = HistogramMetricFamily("latency_seconds", "A native histogram.")
    spread = NativeHistogram(24, 100.0, 0, 0.001, 4, ((0, 2),), (), (2, 1), ())
    native.samples.append(Sample("latency_seconds", {}, None, None, None, spread))
    plain = requests_counted({("/", "200"): 2})
    for _ in range(2):
        same_as_the_library(accept, Families(plain, native))


def test_a_metric_whose_help_changed_is_written_with_its_new_help():
    """A reload (HUP) gives the workers new code; the master, which serves METRICS_PORT,
    stays, and with it what it kept."""
    for help_text in ("Requests.", "Requests, answered or not."):
        family = CounterMetricFamily("http_requests", help_text, labels=["path"])
        family.add_metric(["/"], 1)
        same_as_the_library(None, Families(family))


def test_a_client_cannot_make_the_service_keep_a_format_per_request():
    """The Accept header chooses the format's version and escaping: each new one is kept
    until MAX_FORMATS are, then written by the library alone."""
    headers = [f"application/openmetrics-text; version=1.0.{patch}" for patch in range(20)]
    encoders = [metrics_exposition.encoder_for(header)[0] for header in headers]
    kept = [isinstance(encode, metrics_exposition.CachedFormat) for encode in encoders]
    assert kept[-1] is False
    assert sum(kept) <= metrics_exposition.MAX_FORMATS
    for header in headers:
        same_as_the_library(header, every_kind(2))
