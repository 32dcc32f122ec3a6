"""Prometheus metrics, one registry per app so several apps (tests) never collide.

With several worker processes each one writes its samples to PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode) and whichever worker answers /metrics reads them all,
so a scrape sees one server: counters and histograms summed, gauges by their `multiprocess_mode`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# Inference on this model takes milliseconds; default Prometheus buckets start at 5 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BYTES_BUCKETS = (1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7)
PIXEL_BUCKETS = (4096, 40_000, 100_000, 250_000, 1e6, 4e6, 16e6, 40e6)


class Metrics:
    def __init__(self, multiprocess: bool = False) -> None:
        disable_created_metrics()  # the *_created series only double the scrape size
        own = CollectorRegistry(auto_describe=True)
        # What /metrics exposes: this process's metrics, or every worker's read back from their files.
        self.registry = own
        if multiprocess:
            self.registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.registry)
        self.model_info = ModelInfo()
        self.registry.register(self.model_info)
        r = own
        self.requests = Counter(
            "catsdogs_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "catsdogs_http_request_duration_seconds",
            "End-to-end request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "catsdogs_inference_duration_seconds",
            "onnxruntime run time per model call (one call per batch).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # livesum: the whole server's count, leaving out workers that have died.
        self.in_flight = Gauge(
            "catsdogs_http_requests_in_flight",
            "HTTP requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.open_connections = Gauge(
            "catsdogs_open_connections",
            "Client connections admitted and open now (<= MAX_CONNECTIONS per worker).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_closed = Counter(
            "catsdogs_connections_closed",
            "Connections the server closed on a client: read_timeout or over_capacity.",
            ["reason"],
            registry=r,
        )
        for reason in ("read_timeout", "over_capacity"):
            self.connections_closed.labels(reason=reason)
        self.rejections = Counter(
            "catsdogs_rejections",
            "Requests or batch items refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.predictions = Counter(
            "catsdogs_predictions",
            "Predictions made, by predicted class.",
            ["predicted_class"],
            registry=r,
        )
        self.confidence = Histogram(
            "catsdogs_prediction_confidence",
            "Probability of the predicted class.",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.image_bytes = Histogram(
            "catsdogs_input_image_bytes",
            "Size of uploaded images in bytes.",
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.image_pixels = Histogram(
            "catsdogs_input_image_pixels",
            "Width x height of decoded uploads.",
            buckets=PIXEL_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "catsdogs_model_reloads",
            "Model reload attempts by result.",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result=result)
        self.worker_restarts = Counter(
            "catsdogs_worker_restarts",
            "Worker processes the supervisor restarted after they died.",
            registry=r,
        )

    def set_model(self, model_version: str, data_version: str) -> None:
        self.model_info.labels = (model_version, data_version)


class ModelInfo(Collector):
    """`catsdogs_model_info`: the model this process serves, never a stored sample.

    Only the live model's series may exist, so dashboards never sum two versions; a gauge in
    multiprocess mode would keep every version any worker ever served in its file.
    """

    def __init__(self) -> None:
        self.labels: tuple[str, str] | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "catsdogs_model_info",
            "The model being served (value is always 1).",
            labels=["model_version", "data_version"],
        )
        if self.labels is not None:
            family.add_metric(list(self.labels), 1)
        yield family
