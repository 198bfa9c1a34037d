"""``ddpg bench``: timing, FLOP counting and reports (JSON, Markdown, PNG) for the restoration loop."""

from ddpg.lazy import lazy_exports

# each public name → its module, imported on first use (the command line reads BenchConfig without torch)
_HOMES = {"count_flops": ".flops", "BACKENDS": ".config", "build_denoiser": ".harness", "build_prior": ".harness",
          "make_report": ".harness", "parse_prior_spec": ".harness", "run_bench": ".harness", "BenchConfig": ".config",
          "classify": ".profile", "profile_parts": ".profile", "check_targets": ".report", "environment": ".report",
          "markdown": ".report", "write_all": ".report", "Clock": ".timing", "matmul_rate": ".timing",
          "percentile": ".timing", "summarize_ms": ".timing"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
