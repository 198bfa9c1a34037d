"""What the routes of ``ddpg serve`` share (:class:`ServeState`)."""

from __future__ import annotations

from pathlib import Path

from .job_store import JobStore
from .jobs import Preparer
from .metrics import ServeMetrics
from .scheduler import Scheduler


class ServeState:
    """What the routes share: the scheduler, the request builder, the jobs, metrics, the token and the limits."""

    def __init__(self, scheduler: Scheduler, preparer: Preparer, metrics: ServeMetrics, workroot: Path, *,
                 token: str | None = None, max_body_bytes: int = 32 << 20, model_info: dict | None = None,
                 test_hooks: bool = False, job_ttl_s: float = 3600.0, max_jobs: int = 100):
        self.scheduler, self.preparer, self.metrics, self.workroot = scheduler, preparer, metrics, workroot
        self.jobs = JobStore(scheduler, metrics, preparer.prior, ttl_s=job_ttl_s, max_jobs=max_jobs)
        self.token, self.max_body_bytes, self.test_hooks = token, max_body_bytes, test_hooks
        self.model_info = model_info or {}
        self.ready = False
        self.auto_batch = False  # --max-batch auto: warm-up chooses the scheduler's max_batch
        self.batch_seconds: dict[int, float] = {}  # auto's profile: batch -> seconds per denoiser call
        self.defaults: dict | None = None  # served_defaults of the prior, on the first /v1/models
