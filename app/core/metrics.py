"""Prometheus metrics, on a registry owned by the app (no import-time globals).

Every series carries ``model`` and ``role``, so the teacher/student latency ratio
is one PromQL division (see the README, "Metrics").
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# 0.1 ms .. 30 s, roughly x1.5 apart: fine enough for sub-millisecond student batches.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01,
    0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
    5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
)
RATIO_BUCKETS = (1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)


class Metrics:
    def __init__(self, max_batch_size: int, max_batch_tokens: int) -> None:
        self.registry = r = CollectorRegistry()
        mr = ["model", "role"]
        self.request_duration = Histogram(
            "distil_request_duration_seconds", "End-to-end request time inside the service",
            [*mr, "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokenization = Histogram(
            "distil_tokenization_seconds", "Tokenization time per request",
            mr, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "distil_queue_wait_seconds", "Time an input waited before its forward pass",
            mr, buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram(
            "distil_inference_seconds", "Forward-pass time per batch",
            mr, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "distil_batch_size", "Inputs per forward pass",
            mr, buckets=tuple(range(1, max_batch_size + 1)), registry=r)
        token_buckets = sorted({2 ** i for i in range(3, 20) if 2 ** i < max_batch_tokens} | {max_batch_tokens})
        self.batch_tokens = Histogram(
            "distil_batch_tokens", "Padded tokens per forward pass",
            mr, buckets=tuple(token_buckets), registry=r)
        self.padding_ratio = Histogram(
            "distil_padding_ratio", "Padded / real tokens per forward pass",
            mr, buckets=RATIO_BUCKETS, registry=r)
        self.requests = Counter(
            "distil_requests", "Requests by final status", [*mr, "endpoint", "status"], registry=r)
        self.inputs = Counter("distil_inputs", "Inputs processed", mr, registry=r)
        self.tokens = Counter("distil_tokens", "Real tokens processed", mr, registry=r)
        self.errors = Counter(
            "distil_errors", "Failed requests by error type",
            [*mr, "endpoint", "error_type"], registry=r)
        self.dropped = Counter(
            "distil_dropped_inputs", "Inputs dropped before the forward pass",
            [*mr, "reason"], registry=r)
        self.queue_depth = Gauge("distil_queue_depth", "Inputs waiting in the queue", mr, registry=r)
        self.in_flight = Gauge("distil_in_flight_requests", "Requests being served", mr, registry=r)
        self.model_info = Info("distil_model", "Static facts of each served model", mr, registry=r)

    def bind(self, model: str, role: str) -> ModelMetrics:
        """One model's series, with its labels applied once (``labels()`` per use showed up in
        profiles of the event loop)."""
        return ModelMetrics(self, model, role)


class ModelMetrics:
    """The series of one model. Per-model children are bound here once; the few labelled by
    endpoint, status, error type or reason are bound on first use and kept."""

    def __init__(self, m: Metrics, model: str, role: str) -> None:
        self.m, self.model, self.role = m, model, role
        lb = {"model": model, "role": role}
        self.tokenization = m.tokenization.labels(**lb)
        self.queue_wait = m.queue_wait.labels(**lb)
        self.inference = m.inference.labels(**lb)
        self.batch_size = m.batch_size.labels(**lb)
        self.batch_tokens = m.batch_tokens.labels(**lb)
        self.padding_ratio = m.padding_ratio.labels(**lb)
        self.inputs = m.inputs.labels(**lb)
        self.tokens = m.tokens.labels(**lb)
        self.queue_depth = m.queue_depth.labels(**lb)
        self.in_flight = m.in_flight.labels(**lb)
        self._bound: dict[tuple, object] = {}

    def _child(self, metric, **labels: str):
        key = (metric._name, *labels.values())
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(model=self.model, role=self.role, **labels)
        return child

    def requests(self, endpoint: str, status: int) -> Counter:
        return self._child(self.m.requests, endpoint=endpoint, status=str(status))

    def request_duration(self, endpoint: str) -> Histogram:
        return self._child(self.m.request_duration, endpoint=endpoint)

    def errors(self, endpoint: str, error_type: str) -> Counter:
        return self._child(self.m.errors, endpoint=endpoint, error_type=error_type)

    def dropped(self, reason: str) -> Counter:
        return self._child(self.m.dropped, reason=reason)
