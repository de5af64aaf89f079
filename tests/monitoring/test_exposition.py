from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.exposition import ExpositionError, Sample, read_families

INSTRUMENTATOR = """\
# HELP http_requests_total Total number of requests by method, status and handler.
# TYPE http_requests_total counter
http_requests_total{handler="/api/health",method="GET",status="2xx"} 1027.0
http_requests_total{handler="/api/match",method="POST",status="5xx"} 3.0
# HELP http_requests_created Total number of requests by method, status and handler.
# TYPE http_requests_created gauge
http_requests_created{handler="/api/health",method="GET",status="2xx"} 1.7e+09
# HELP http_request_duration_seconds Latency with only few buckets by handler.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/api/match",le="0.1",method="POST"} 1.0
http_request_duration_seconds_bucket{handler="/api/match",le="+Inf",method="POST"} 3.0
http_request_duration_seconds_count{handler="/api/match",method="POST"} 3.0
http_request_duration_seconds_sum{handler="/api/match",method="POST"} 2.5
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 4.2
"""


def test_reads_only_the_requested_families() -> None:
    result = read_families(INSTRUMENTATOR, {"http_requests_total", "http_request_duration_seconds"})

    assert set(result.samples) == {"http_requests_total", "http_request_duration_seconds"}
    assert result.family("http_requests_total") == [
        Sample("http_requests_total", {"handler": "/api/health", "method": "GET", "status": "2xx"}, 1027.0),
        Sample("http_requests_total", {"handler": "/api/match", "method": "POST", "status": "5xx"}, 3.0),
    ]
    names = [sample.name for sample in result.family("http_request_duration_seconds")]
    assert names == ["http_request_duration_seconds_bucket"] * 2 + [
        "http_request_duration_seconds_count",
        "http_request_duration_seconds_sum",
    ]
    assert result.family("http_request_duration_seconds")[1].labels["le"] == "+Inf"
    assert result.types == {"http_requests_total": "counter", "http_request_duration_seconds": "histogram"}
    assert result.family("process_cpu_seconds_total") == []


def test_escaped_label_values_timestamps_and_special_values() -> None:
    text = (
        "# a free comment\n"
        "\n"
        'otel_total{path="C:\\\\dir",quote="say \\"hi\\"",lines="a\\nb",brace="}{",other="\\t"} NaN\n'
        'otel_total{le="+Inf"} +Inf 1700000000000\n'
        "  otel_total -Inf  \n"
        "otel_total{} 1e3\t42\n"
        'otel_total{a="1",} 7\n'
    )
    samples = read_families(text, {"otel"}).family("otel")

    assert samples[0].labels == {
        "path": "C:\\dir",
        "quote": 'say "hi"',
        "lines": "a\nb",
        "brace": "}{",
        "other": "\\t",
    }
    assert math.isnan(samples[0].value)
    assert samples[1] == Sample("otel_total", {"le": "+Inf"}, math.inf, 1700000000000)
    assert samples[2] == Sample("otel_total", {}, -math.inf)
    assert samples[3] == Sample("otel_total", {}, 1000.0, 42)
    assert samples[4] == Sample("otel_total", {"a": "1"}, 7.0)


@pytest.mark.parametrize(
    ("text", "line_number"),
    [
        ("<html><body>Bad gateway</body></html>\n", 1),
        ('# TYPE up gauge\nup 1\nup{job="x" 1\n', 3),
        ("up 1\nup one\n", 2),
        ("up 1_000\n", 1),
        ("up 1 2 3\n", 1),
        ("up 1 12.5\n", 1),
        ('up{job="x",job="y"} 1\n', 1),
        ('up{job="unterminated} 1\n', 1),
        ("up\n", 1),
        ('up{job="x" instance="y"} 1\n', 1),
        ("ok_metric 1\n\nother-metric 2\n", 3),
    ],
)
def test_garbage_is_an_error_naming_the_line(text: str, line_number: int) -> None:
    # "up" is requested, so its lines are checked entirely; "other-metric" is not, and is caught by its name.
    with pytest.raises(ExpositionError) as raised:
        read_families(text, {"up"})

    assert raised.value.line_number == line_number
    assert f"line {line_number}:" in str(raised.value)


def test_lines_of_other_families_are_not_parsed_beyond_their_name() -> None:
    # The value of an unrequested family is not read, so a bad one there does not fail the scrape.
    result = read_families('noise{a="b"} not-a-number\nup 1\n', {"up"})

    assert result.family("up") == [Sample("up", {}, 1.0)]


def test_an_invalid_family_name_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid metric family name"):
        read_families("up 1\n", {"not a name"})


def _client_samples(text: str, families: set[str]) -> list[tuple[str, dict[str, str], float, int | None]]:
    """prometheus-client's samples of the requested families, in the shape read_families gives."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            owner = next(
                (
                    f
                    for f in families
                    if sample.name == f or sample.name in {f + s for s in ("_bucket", "_sum", "_count", "_total")}
                ),
                None,
            )
            if owner is None:
                continue
            timestamp = None if sample.timestamp is None else round(float(sample.timestamp) * 1000)
            found.append((sample.name, sample.labels, float(sample.value), timestamp))
    return found


def _ours(text: str, families: set[str]) -> list[tuple[str, dict[str, str], float, int | None]]:
    result = read_families(text, families)
    return [
        (sample.name, sample.labels, sample.value, sample.timestamp_ms)
        for family in result.samples.values()
        for sample in family
    ]


def _same(
    left: list[tuple[str, dict[str, str], float, int | None]],
    right: list[tuple[str, dict[str, str], float, int | None]],
) -> bool:
    def key(item: tuple[str, dict[str, str], float, int | None]) -> tuple[str, str, str, str]:
        name, labels, value, timestamp = item
        return (name, repr(sorted(labels.items())), repr(value), repr(timestamp))

    return sorted(map(key, left)) == sorted(map(key, right))


label_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=0, max_value=10**12).map(float),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(label_values, label_values, values, st.floats(0, 100)), min_size=1, max_size=8),
    gauge=values,
)
def test_same_samples_as_prometheus_client_on_generated_expositions(
    rows: list[tuple[str, str, float, float]], gauge: float
) -> None:
    registry = CollectorRegistry()
    counter = Counter("http_requests_total", "Requests.", ("handler", "status"), registry=registry)
    histogram = Histogram("http_server_request_duration_seconds", "Durations.", ("http_route",), registry=registry)
    other = Gauge("process_open_fds", "Noise.", ("kind",), registry=registry)
    for handler, status, value, observed in rows:
        if value >= 0 and not math.isinf(value) and not math.isnan(value):
            counter.labels(handler, status).inc(value)
        histogram.labels(handler).observe(observed)
        other.labels(status).set(gauge)
    text = generate_latest(registry).decode()
    families = {"http_requests_total", "http_server_request_duration_seconds"}

    assert _same(_ours(text, families), _client_samples(text, families))


@settings(max_examples=150, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), label_values, max_size=3),
            values,
            st.none() | st.integers(min_value=0, max_value=2**40),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_same_samples_as_prometheus_client_with_timestamps_and_escapes(
    samples: list[tuple[dict[str, str], float, int | None]],
) -> None:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    lines = ["# HELP job_runs_total Runs.", "# TYPE job_runs_total counter"]
    for labels, value, timestamp in samples:
        rendered = ",".join(f'{name}="{escape(text)}"' for name, text in labels.items())
        line = f"job_runs_total{{{rendered}}} {value!r}".replace("nan", "NaN").replace("inf", "Inf")
        lines.append(line if timestamp is None else f"{line} {timestamp}")
    text = "\n".join(lines) + "\n"

    assert _same(_ours(text, {"job_runs"}), _client_samples(text, {"job_runs"}))


@pytest.mark.parametrize(
    "text",
    [
        "<html>internal-secret-page</html>\n",
        'up{job="internal-secret-page"} 1 internal\n',
        "up internal-secret-page\n",
        'up{internal_secret_page="1",internal_secret_page="2"} 1\n',
        'up{job="internal-secret-page" 1\n',
    ],
    ids=["html", "timestamp", "value", "label-twice", "labels-not-closed"],
)
def test_an_error_never_quotes_the_text_it_read(text: str) -> None:
    # The message is shown in the admin, the API and the logs: whatever an endpoint answered (an internal
    # page, when a source is pointed at one) must not come back through it, only the line's number.
    with pytest.raises(ExpositionError) as raised:
        read_families("# TYPE up gauge\n" + text, {"up"})

    assert raised.value.line_number == 2
    assert str(raised.value).startswith("line 2: ")
    assert "internal" not in str(raised.value) and "secret" not in str(raised.value)
