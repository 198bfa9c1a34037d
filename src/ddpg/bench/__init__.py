"""``ddpg bench``: timing, FLOP counting and reports (JSON, Markdown, PNG) for the restoration loop."""

from .flops import count_flops
from .harness import BACKENDS, BenchConfig, build_denoiser, build_prior, make_report, parse_prior_spec, run_bench
from .profile import classify, profile_parts
from .report import check_targets, environment, markdown, write_all
from .timing import Clock, matmul_rate, percentile, summarize_ms

__all__ = ["BACKENDS", "BenchConfig", "Clock", "build_denoiser", "build_prior", "check_targets", "classify",
           "count_flops", "environment", "make_report", "markdown", "matmul_rate", "parse_prior_spec", "percentile",
           "profile_parts", "run_bench", "summarize_ms", "write_all"]
