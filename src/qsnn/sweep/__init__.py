"""Sweeps over the allocations of a bit budget, and their report (SPEC §8)."""

from .report import Report, build_report, collect_runs
from .runner import dry_run, plan_sweep, run_dir_name, sweep

__all__ = [
    "Report",
    "build_report",
    "collect_runs",
    "dry_run",
    "plan_sweep",
    "run_dir_name",
    "sweep",
]
