"""The server's metrics in the Prometheus text format (version 0.0.4), written out by hand: counters,
histograms and gauges are a few lines each, and the server needs no other dependency for them.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (one `# HELP` and `# TYPE` line per
metric; histograms as cumulative `_bucket{le=...}` series ending at `+Inf`, then `_sum` and `_count`).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

Labels = tuple[tuple[str, str], ...]


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, value in labels)
    return "{" + ",".join(f'{name}="{value}"' for (name, _), value in zip(labels, escaped)) + "}"


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help_text = name, help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        with self._lock:
            lines += [f"{self.name}{_format_labels(k)} {_format_number(v)}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help_text = name, help_text
        self.bounds = tuple(buckets) + (math.inf,)
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}  # bucket counts, [sum]
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.bounds), [0.0]))
            counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value
            total[0] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, (counts, total) in sorted(self._series.items()):
                cumulative = 0
                for bound, count in zip(self.bounds, counts):
                    cumulative += count
                    labels = _format_labels(key + (("le", _format_number(bound)),))
                    lines.append(f"{self.name}_bucket{labels} {cumulative}")
                lines.append(f"{self.name}_sum{_format_labels(key)} {_format_number(total[0])}")
                lines.append(f"{self.name}_count{_format_labels(key)} {cumulative}")
        return lines


class Gauge:
    """A value read when the metrics are rendered (queue depth, requests in flight)."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help_text, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} gauge",
                f"{self.name} {_format_number(self.read())}"]


class ServerMetrics:
    """What `GET /metrics` reports."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.in_flight = 0
        self._lock = threading.Lock()
        self.requests = Counter("mixkit_requests_total", "HTTP requests answered, by endpoint and status code.")
        self.errors = Counter("mixkit_request_errors_total", "HTTP requests answered with a 4xx or 5xx status.")
        self.latency = Histogram("mixkit_request_duration_seconds", "Time from request to the end of the response.",
                                 LATENCY_BUCKETS)
        self.batch_size = Histogram("mixkit_batch_size", "Requests answered by each model call.", BATCH_BUCKETS)
        self.gauges = (Gauge("mixkit_queue_depth", "Requests waiting for the model.", queue_depth),
                       Gauge("mixkit_requests_in_flight", "HTTP requests being answered.", lambda: self.in_flight))

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
        self.requests.inc(endpoint=endpoint, code=str(status))
        if status >= 400:
            self.errors.inc(endpoint=endpoint, code=str(status))
        self.latency.observe(seconds, endpoint=endpoint)

    def render(self) -> str:
        parts = (self.requests, self.errors, self.latency, self.batch_size, *self.gauges)
        return "\n".join(line for metric in parts for line in metric.render()) + "\n"
