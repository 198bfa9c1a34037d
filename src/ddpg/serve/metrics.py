"""The server's Prometheus metrics (``GET /metrics``), in a registry of their own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("ok", "invalid", "too_large", "queue_full", "unauthorized", "draining", "deadline", "disconnected",
            "cancelled", "error")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class ServeMetrics:
    """Requests by outcome, queue depth, active samples, batch occupancy and step latency per tick, end-to-end
    latency, images restored, jobs held and event streams open. Thread-safe (the engine loop and the app both
    update it)."""

    def __init__(self, max_batch: int):
        """``max_batch``: the most samples a tick may hold (the occupancy histogram's last bucket)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ddpg_serve_requests", "Restore requests and jobs by outcome", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.queue_depth = Gauge("ddpg_serve_queue_depth", "Requests waiting for admission", registry=r)
        self.active = Gauge("ddpg_serve_active_samples", "Samples in the engine's batch", registry=r)
        self.max_batch = Gauge("ddpg_serve_max_batch", "Samples per engine tick at most (0 until --max-batch "
                               "auto has chosen)", registry=r)
        self.occupancy = Histogram("ddpg_serve_batch_occupancy", "Samples per engine tick", registry=r,
                                   buckets=tuple(range(1, max_batch + 1)))
        self.step_seconds = Histogram("ddpg_serve_step_seconds", "Seconds per engine tick (one step of every "
                                      "active sample)", registry=r, buckets=STEP_BUCKETS)
        self.latency = Histogram("ddpg_serve_request_seconds", "End-to-end seconds of successful restore requests",
                                 registry=r, buckets=LATENCY_BUCKETS)
        self.images = Counter("ddpg_serve_images_restored", "Images restored", registry=r)
        self.jobs = Gauge("ddpg_serve_jobs", "Jobs held: unfinished, and finished ones kept for their results",
                          registry=r)
        self.listeners = Gauge("ddpg_serve_event_listeners", "Job event streams open", registry=r)

    def set_depths(self, queued: int, active: int) -> None:
        self.queue_depth.set(queued)
        self.active.set(active)

    def observe_tick(self, samples: int, seconds: float) -> None:
        self.occupancy.observe(samples)
        self.step_seconds.observe(seconds)

    def count(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
