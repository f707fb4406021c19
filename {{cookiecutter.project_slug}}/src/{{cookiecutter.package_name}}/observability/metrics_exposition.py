"""The text of a scrape, byte for byte as prometheus_client writes it, in a fraction of the time.

prometheus_client escapes and formats the name and labels of every series at every scrape:
with 8 workers and 100 routes, most of a scrape's time (OpenMetrics, which Prometheus asks
for, takes twice as long as the plain text format). The series hardly change from one scrape
to the next, so each format here keeps what the library wrote for each metric's header and
for each series before its value, and a scrape only formats the values. What it keeps is
what the last scrape saw: a series gone (a dead worker's) is forgotten at the next scrape.
The multiprocess store gives each sample an id it made once (IdentifiedMetric): looking a
series up by a key made from its labels was most of what writing a scrape cost.

A metric whose samples carry what this does not write (timestamps, exemplars, native
histograms, the samples the plain text format moves to the end) is left to the library.
"""

import copy
from collections.abc import Callable, Hashable, Iterable
from functools import partial
from threading import Lock

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Encode = Callable[[Collector], bytes]
Family = tuple[str, str, str, str]  # name, type, help, unit
SeriesId = Hashable  # one per sample name and labels, within a metric
# The samples the plain text format moves after the others, as gauges of their own.
MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")
# Formats kept at once: the Accept header chooses the version and escaping, so a client
# could otherwise make the service keep one more format per request.
MAX_FORMATS = 8
# How the library writes a value (as Go does); typed here, where the library's is not.
written_value: Callable[[float], str] = floatToGoString
VALUE_WRITTEN = written_value(0.0)

_formats: dict[object, "CachedFormat"] = {}
_formats_lock = Lock()


def encoder_for(accept_header: str | None) -> tuple[Encode, str]:
    """prometheus_client's choice of format for this Accept header, and its content type,
    with the format's writer replaced by a CachedFormat of it."""
    encode, content_type = choose_encoder(accept_header or "")
    key = _format_key(encode)
    with _formats_lock:
        cached = _formats.get(key)
        if cached is None and len(_formats) < MAX_FORMATS:
            cached = _formats[key] = CachedFormat(encode)
    return (cached or encode), content_type


def scrape(
    registry: CollectorRegistry, accept_header: str | None, names: list[str] | None
) -> tuple[bytes, str]:
    """The text of a scrape of `registry` (only the `names` asked for, if any), in the format
    the Accept header asks for, and its content type."""
    encode, content_type = encoder_for(accept_header)
    return encode(registry.restricted_registry(names) if names else registry), content_type


def _format_key(encode: Encode) -> object:
    if isinstance(encode, partial):
        return encode.func, encode.args, tuple(sorted(encode.keywords.items()))
    return encode


class IdentifiedMetric(Metric):
    """A metric whose collector gives each sample an id: equal for the same sample name and
    labels, scrape after scrape, and cheaper to look up than the labels themselves."""

    sample_ids: list[SeriesId]


def _series_ids(metric: Metric) -> list[SeriesId]:
    if isinstance(metric, IdentifiedMetric):
        return metric.sample_ids
    return [(one.name, tuple(one.labels.items())) for one in metric.samples]


class _Metrics:
    """A collector of the metrics given."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class CachedFormat:
    """One of prometheus_client's writers, keeping its headers and series prefixes."""

    def __init__(self, encode: Encode) -> None:
        self._encode = encode
        # What follows the last metric ("# EOF" in OpenMetrics, nothing in plain text).
        self._end = encode(_Metrics([])).decode("utf-8")
        self._headers: dict[Family, str] = {}
        self._prefixes: dict[str, dict[SeriesId, str]] = {}  # by metric

    def __call__(self, registry: Collector) -> bytes:
        # What the last scrape kept, read once: a concurrent scrape may replace it meanwhile.
        kept_headers, kept_prefixes = self._headers, self._prefixes
        headers: dict[Family, str] = {}
        prefixes: dict[str, dict[SeriesId, str]] = {}
        output = []
        for metric in registry.collect():
            if not _only_plain_samples(metric):
                output.append(self._written(metric))
                continue
            family = (metric.name, metric.type, metric.documentation, metric.unit)
            header = headers.get(family) or kept_headers.get(family) or self._header(metric)
            headers[family] = header
            output.append(header)
            series = _series_ids(metric)
            written = self._series_prefixes(metric, header, series, kept_prefixes)
            prefixes.setdefault(metric.name, {}).update(zip(series, written, strict=True))
            output += [
                f"{prefix}{written_value(sample.value)}\n"
                for prefix, sample in zip(written, metric.samples, strict=True)
            ]
        output.append(self._end)
        # Concurrent scrapes each keep what they saw; the last one to end wins.
        self._headers, self._prefixes = headers, prefixes
        return "".join(output).encode("utf-8")

    def _written(self, metric: Metric, samples: list[Sample] | None = None) -> str:
        """The library's text for the metric (with these samples instead of its own)."""
        if samples is not None:
            metric = copy.copy(metric)
            metric.samples = samples
        return self._encode(_Metrics([metric])).decode("utf-8").removesuffix(self._end)

    def _header(self, metric: Metric) -> str:
        return self._written(metric, samples=[])

    def _series_prefixes(
        self,
        metric: Metric,
        header: str,
        series: list[SeriesId],
        kept_prefixes: dict[str, dict[SeriesId, str]],
    ) -> list[str]:
        """Each sample's line up to its value: as the last scrape kept it, or written now for
        the series new since."""
        kept = kept_prefixes.get(metric.name, {})
        try:
            return [kept[one] for one in series]
        except KeyError:
            samples = zip(series, metric.samples, strict=True)
            new = [sample for one, sample in samples if one not in kept]
            written = iter(self._prefixes_of(metric, header, new))
            return [kept[one] if one in kept else next(written) for one in series]

    def _prefixes_of(self, metric: Metric, header: str, samples: list[Sample]) -> list[str]:
        """Each series' line up to its value: the library's lines for values whose text is
        known, in one call, that text taken off each."""
        known_values = [sample._replace(value=0.0) for sample in samples]
        lines = self._written(metric, known_values).removeprefix(header).splitlines()
        return [line.removesuffix(VALUE_WRITTEN) for line in lines]


def _only_plain_samples(metric: Metric) -> bool:
    moved = {metric.name + suffix for suffix in MOVED_SUFFIXES}
    return all(
        sample.timestamp is None
        and sample.exemplar is None
        and sample.native_histogram is None
        and sample.name not in moved
        for sample in metric.samples
    )
