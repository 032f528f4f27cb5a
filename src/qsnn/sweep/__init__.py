"""Sweeps over the allocations of a bit budget, their report (SPEC §8), and the search over
per-layer allocations (``search``; Optuna, an optional extra, is imported only when used)."""

from .report import Report, build_report, collect_runs
from .runner import dry_run, plan_sweep, run_dir_name, sweep
from .search import search, search_space, trial_cost

__all__ = [
    "Report",
    "build_report",
    "collect_runs",
    "dry_run",
    "plan_sweep",
    "run_dir_name",
    "search",
    "search_space",
    "sweep",
    "trial_cost",
]
