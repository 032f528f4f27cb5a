"""Sweeps (issue 7): files written, resume after a kill, impossible budgets, --dry-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qsnn import Bits
from qsnn.metrics import profile
from qsnn.models import create_model
from qsnn.sweep import build_report, dry_run, plan_sweep, sweep
from qsnn.train import TrainConfig

pytest.importorskip("sklearn")  # the embedded digits dataset

QSNN = [sys.executable, "-m", "qsnn.cli"]
TINY = dict(
    model="small_convnet",
    dataset="digits",
    epochs=1,
    batch_size=64,
    lr=2e-3,
    precision="fp32",
    progress=False,
    profile_batches=1,
    threads=1,
)


def _flags() -> list[str]:
    return [
        "--model",
        "small_convnet",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--no-progress",
    ]


def test_plan_orders_cheapest_first_and_covers_the_budget() -> None:
    plan = plan_sweep(4)
    # Every allocation of budget 4 (powers of two): w in {1, 2, 4}, by hand.
    assert {str(b) for b in plan} == {"1/1/4", "1/2/2", "1/4/1", "2/1/2", "2/2/1", "4/1/1"}
    assert [b.t for b in plan] == sorted(b.t for b in plan)
    assert [str(b) for b in plan_sweep(4, weights=[1])] == ["1/4/1", "1/2/2", "1/1/4"]


def test_plan_covers_several_budgets_at_once() -> None:
    # Budgets 1, 2 and 4 at b_w = 1, by hand: 1/1/1; 1/2/1, 1/1/2; 1/4/1, 1/2/2, 1/1/4.
    plan = plan_sweep([4, 1, 2], weights=[1])
    assert {str(b) for b in plan} == {"1/1/1", "1/2/1", "1/1/2", "1/4/1", "1/2/2", "1/1/4"}
    assert [b.t for b in plan] == sorted(b.t for b in plan)
    assert plan_sweep([2], explicit=["2/1/1", "1/2/1", "1/1/2"]) == plan_sweep(2, weights=[1, 2])
    with pytest.raises(ValueError, match="budget 1,2"):
        plan_sweep([1, 2], explicit=["1/2/2"])
    with pytest.raises(ValueError, match="duplicates"):
        plan_sweep([2, 2])


def test_cli_budget_list_and_range_dry_run() -> None:
    # 1-8 keeps the budgets with a power-of-two allocation: 1, 2, 4, 8 (3, 5, 6, 7 have none).
    listed = subprocess.run(
        [*QSNN, "sweep", "--model", "small_convnet", "--dataset", "digits", "--budget", "1-8",
         "--weights", "1", "--dry-run"], capture_output=True, text=True,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    budgets = [line.split()[1] for line in listed.stdout.splitlines()[2:]]
    assert sorted(int(b) for b in budgets) == [1, 2, 2, 4, 4, 4, 8, 8, 8, 8]
    for bad in ("3-3", "4-2", "1,1", "1-x"):
        proc = subprocess.run([*QSNN, "sweep", "--budget", bad, "--dry-run"],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (bad, proc.stderr)
        assert "--budget" in proc.stderr


def test_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="budget 7"):
        plan_sweep(7)  # prime > 2 with b_w, b_s, T powers of two
    with pytest.raises(ValueError, match="budget 4"):
        plan_sweep(4, explicit=["1/1/2"])
    with pytest.raises(ValueError, match="b_w"):
        plan_sweep(8, weights=[16])  # 16/1/1 has budget 16, not 8
    proc = subprocess.run(
        [*QSNN, "sweep", "--budget", "13", "--dry-run"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "budget 13" in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_s_ace_equals_profile() -> None:
    base = TrainConfig(**TINY)
    plan = [Bits.parse("1/4/1"), Bits.parse("2/1/2")]
    rows = dry_run(base, plan)
    for row, bits in zip(rows, plan, strict=True):
        model = create_model(
            "small_convnet", bits=str(bits), num_classes=10, in_channels=1, img_size=8
        )
        expected = profile(model, torch.rand(3, 1, 8, 8)).s_ace
        assert row["s_ace"] == expected
        assert row["bits"] == str(bits)


def test_tiny_sweep_writes_every_file(tmp_path: Path) -> None:
    base = TrainConfig(**TINY)
    plan = [Bits.parse("1/2/1"), Bits.parse("2/1/1")]
    results = sweep(base, plan, tmp_path, seeds=1, command="qsnn sweep --allocations 1/2/1,2/1/1")
    assert len(results) == 2
    sweep(base, plan, tmp_path, seeds=1)  # finished: trains nothing, keeps the command
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["command"] == "qsnn sweep --allocations 1/2/1,2/1/1"
    report = build_report(tmp_path)
    header = dict(report.header())
    assert header["command"] == saved["command"]
    walls = sum(json.loads((r / "result.json").read_text())["wall_time_s"]
                for r in (tmp_path / "runs").iterdir())  # fmt: skip
    assert header["wall time"].endswith("in all over 2 run(s) (the sum of each run's wall "
                                        "time; runs trained in parallel overlap)")  # fmt: skip
    assert header["wall time"].startswith(f"{walls:.0f} s" if walls < 60 else "")
    for name in (
        "sweep.json",
        "results.csv",
        "results.jsonl",
        "report.md",
        "report.html",
        "accuracy_vs_sace.png",
        "allocation.png",
        "firing_rates.png",
    ):
        assert (tmp_path / name).is_file(), name
        assert (tmp_path / name).stat().st_size > 0, name
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["bits"] for line in lines) == ["1/2/1", "2/1/1"]
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    for column in (
        "bits",
        "params",
        "params_16",
        "s_ace",
        "ns_ace",
        "sops",
        "energy_conventional_uj",
        "energy_bits_uj",
        "test_acc_best",
        "test_acc_last",
        "wall_time_s",
    ):
        assert column in header
    md = (tmp_path / "report.md").read_text()
    assert "Best allocation" in md and "1/2/1" in md and "2/1/1" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "1/2/1" in report.table()


def test_rows_of_a_report_outlive_their_run_directories(tmp_path: Path) -> None:
    """A checkout with a committed report but not its runs: the rows of ``results.jsonl``
    stay in the table, and a re-run of the sweep trains none of them again."""
    import shutil
    from dataclasses import replace

    from qsnn.train.config import settings_key

    base = TrainConfig(**TINY)
    plan = [Bits.parse("1/2/1"), Bits.parse("2/1/1")]
    sweep(base, plan, tmp_path, seeds=1)
    build_report(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    # Each row names its run: the settings key of the sweep's config at its allocation, seed.
    for row in rows:
        assert row["key"] == settings_key(replace(base, bits=row["bits"], seed=row["seed"]))
    gone = next(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("2-1-1"))
    shutil.rmtree(gone)
    report = build_report(tmp_path)
    assert sorted(r["bits"] for r in report.rows) == ["1/2/1", "2/1/1"]
    assert "1 of the 2 rows are from this directory's results.jsonl" in report.source
    again = sweep(base, plan, tmp_path, seeds=1)
    assert not gone.exists()  # not trained again
    assert [r["bits"] for r in again] == ["1/2/1", "2/1/1"]
    assert (
        again[1]["test_acc_best"] == next(r for r in rows if r["bits"] == "2/1/1")["test_acc_best"]
    )
    # A kept row is the sweep's only under its settings key: under another base config
    # (half the learning rate) neither the run found nor the kept row makes the table.
    other = replace(base, lr=base.lr / 2)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    saved["base"] = other.to_dict()
    (tmp_path / "sweep.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="no finished run with the settings"):
        build_report(tmp_path)


def test_committed_sweeps_keep_their_runs_json_but_not_their_weights() -> None:
    """The repository's ignore rules: a sweep under docs/sweeps commits each run's json (the
    report is rebuilt from it), never its checkpoints; other runs/ folders stay out."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: the ignore rules are git's")

    def ignored(path: str) -> bool:
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=root)
        assert proc.returncode in (0, 1), proc
        return proc.returncode == 0

    run = "docs/sweeps/some-sweep/runs/1-2-2-seed0-0123456789ab"
    for name in ("result.json", "config.json", "metrics.jsonl"):
        assert not ignored(f"{run}/{name}"), name
    for name in ("checkpoint.pt", "best.pt", ".lock"):
        assert ignored(f"{run}/{name}"), name
    assert ignored("runs/sweep-small_convnet-digits-b4/runs/1-1-1-seed0/result.json")


@pytest.mark.slow  # a real sweep process killed mid-run (~15 s); finished runs are skipped and
# settings keep runs apart in process in every suite (test_changed_settings_train_new_runs...)
def test_killed_sweep_resumes_only_the_remaining_run(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    cmd = [*QSNN, "sweep", "--allocations", "1/2/1,2/1/1", "--out", str(out), *_flags()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # Cheapest first: (T, b_s, b_w) puts 2/1/1 before 1/2/1.
    assert [str(b) for b in plan_sweep(explicit=["1/2/1", "2/1/1"])] == ["2/1/1", "1/2/1"]
    runs = out / "runs"  # run directories: <w>-<s>-<t>-seed<k>-<settings key>
    deadline = time.monotonic() + 240
    while (
        not list(runs.glob("2-1-1-seed0-*/result.json"))
        and proc.poll() is None
        and (time.monotonic() < deadline)
    ):
        time.sleep(0.05)
    assert list(runs.glob("2-1-1-seed0-*/result.json")), "the first run never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (first,) = runs.glob("2-1-1-seed0-*/result.json")
    assert not list(runs.glob("1-2-1-seed0-*/result.json")), "the sweep finished before the kill"
    before = first.read_bytes()
    mtime = first.stat().st_mtime_ns
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished before, skipped" in done.stderr
    assert first.read_bytes() == before and first.stat().st_mtime_ns == mtime
    assert len(list(runs.glob("1-2-1-seed0-*/result.json"))) == 1
    assert (out / "report.md").exists()


# -- issue 16, item 1: runs keyed by everything that shapes them ------------------------------
def test_changed_settings_train_new_runs_and_the_report_keeps_them_apart(tmp_path: Path) -> None:
    """A finished 1-epoch sweep re-run with another learning rate trains a new run instead of
    reusing the old one ("finished before"); the report's table holds only the runs of the
    sweep's current settings and names the other one with how it differs; the same settings
    again train nothing."""
    plan = [Bits.parse("2/1/1")]
    sweep(TrainConfig(**TINY), plan, tmp_path)
    first = sorted((tmp_path / "runs").iterdir())
    assert len(first) == 1 and first[0].name.startswith("2-1-1-seed0-")
    other = TrainConfig(**{**TINY, "lr": 1e-3})
    sweep(other, plan, tmp_path)
    second = sorted((tmp_path / "runs").iterdir())
    assert len(second) == 2  # a new directory: another key
    lrs = {json.loads((d / "config.json").read_text())["lr"] for d in second}
    assert lrs == {2e-3, 1e-3}
    report = build_report(tmp_path)
    assert len(report.rows) == 1 and report.rows[0]["_settings"].lr == 1e-3
    md = (tmp_path / "report.md").read_text()
    assert "Not in this table: 1 finished run(s)" in md and "lr 0.002" in md
    stamp = {d.name: (d / "result.json").stat().st_mtime_ns for d in second}
    sweep(other, plan, tmp_path)  # same settings: nothing retrained
    assert {d.name: (d / "result.json").stat().st_mtime_ns
            for d in (tmp_path / "runs").iterdir()} == stamp  # fmt: skip


def test_settings_key_covers_what_shapes_a_run() -> None:
    from qsnn.train.config import settings_key

    base = TrainConfig(**TINY)
    assert settings_key(base) == settings_key(TrainConfig(**TINY))
    assert settings_key(base) == settings_key(TrainConfig(**{**TINY, "threads": 2}))  # resumable
    for change in ({"epochs": 2}, {"seed": 1}, {"bits": "2/2/2"}, {"overrides": {"head": 8}},
                   {"model_options": {"neuron": {"theta": 0.5}}}):  # fmt: skip
        assert settings_key(TrainConfig(**{**TINY, **change})) != settings_key(base), change


def test_a_run_directory_from_before_run_keys_is_reused(tmp_path: Path) -> None:
    """A sweep directory written before run keys (``2-1-1-seed0``) keeps its finished run
    when the settings match: renamed to the old layout, the run is skipped, not retrained."""
    plan = [Bits.parse("2/1/1")]
    sweep(TrainConfig(**TINY), plan, tmp_path)
    (keyed,) = (tmp_path / "runs").iterdir()
    legacy = keyed.with_name("2-1-1-seed0")
    keyed.rename(legacy)
    stamp = (legacy / "result.json").stat().st_mtime_ns
    sweep(TrainConfig(**TINY), plan, tmp_path)
    assert [d.name for d in (tmp_path / "runs").iterdir()] == ["2-1-1-seed0"]
    assert (legacy / "result.json").stat().st_mtime_ns == stamp
    assert len(build_report(tmp_path).rows) == 1


def test_only_rank_0_writes_the_sweep_file(tmp_path: Path, monkeypatch) -> None:
    """Under torchrun every rank runs the sweep; a rank other than 0 writes no sweep.json (its
    runs were finished by rank 0 here, so it trains nothing either)."""
    plan = [Bits.parse("2/1/1")]
    sweep(TrainConfig(**TINY), plan, tmp_path / "a")
    (tmp_path / "a" / "sweep.json").unlink()
    monkeypatch.setenv("RANK", "1")
    sweep(TrainConfig(**TINY), plan, tmp_path / "a")
    assert not (tmp_path / "a" / "sweep.json").exists()


@pytest.mark.slow  # two independent processes (~35 s); --workers below covers the same locks
def test_two_sweep_processes_on_one_directory_train_each_run_once(tmp_path: Path) -> None:
    """Two `qsnn sweep` processes started together on one --out share the work: every run is
    trained by one of them (one metrics line per epoch, one result, three "epoch 1/1" lines in
    the two logs together), and both exit 0 with the whole table."""
    out = tmp_path / "sw"
    cmd = [*QSNN, "sweep", "--allocations", "1/2/1,2/1/1,1/1/2", "--out", str(out), *_flags()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHDYNAMO_DISABLE": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]  # fmt: skip
    logs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in logs]
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1, run.name  # 1 epoch
        assert (run / "result.json").is_file()
    trained = [err.count("epoch 1/1: loss") for _, err in logs]  # one line per trained run
    assert sum(trained) == 3, [err[-3000:] for _, err in logs]
    for stdout, _ in logs:
        assert all(b in stdout for b in ("1/2/1", "2/1/1", "1/1/2"))


@pytest.mark.slow  # two real sweeps, one killed (~50 s)
def test_a_killed_workers_run_is_taken_over(tmp_path: Path) -> None:
    """Worker A trains the one run of a 2-epoch sweep; worker B, started meanwhile, leaves it
    to A and waits. A is killed after its first epoch: B resumes the run from A's checkpoint
    and finishes the sweep (two metrics lines, one per epoch: nothing trained twice)."""
    out = tmp_path / "sw"
    flags = _flags()
    flags[flags.index("--epochs") + 1] = "2"
    cmd = [*QSNN, "sweep", "--allocations", "2/1/1", "--out", str(out), *flags]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHDYNAMO_DISABLE": "1"}
    a = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(out.glob("runs/*/.lock")):
        time.sleep(0.05)
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = lambda: list(out.glob("runs/*/metrics.jsonl"))  # noqa: E731
    while time.monotonic() < deadline and not (
        metrics() and metrics()[0].read_text().strip() and a.poll() is None
    ):
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait()
    _, err = b.communicate(timeout=600)
    assert b.returncode == 0, err[-2000:]
    assert "back to it later" in err and "(resuming)" in err, err[-2000:]
    (run,) = (out / "runs").iterdir()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (run / "result.json").is_file()


@pytest.mark.slow  # three real processes (~35 s); the run lock is tested in process in
# test_reliability_train
def test_workers_share_a_sweep_and_train_each_run_once(tmp_path: Path) -> None:
    """`qsnn sweep --workers 2`: two worker processes train the three runs between them (one
    metrics line per run, three "epoch 1/1" lines in all), the parent writes one report."""
    out = tmp_path / "sw"
    cmd = [*QSNN, "sweep", "--allocations", "1/2/1,2/1/1,1/1/2", "--out", str(out),
           "--workers", "2", *_flags()]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHDYNAMO_DISABLE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1, run.name
    assert done.stderr.count("epoch 1/1: loss") == 3, done.stderr[-3000:]
    assert (out / "report.md").is_file()
    assert all(b in done.stdout for b in ("1/2/1", "2/1/1", "1/1/2"))
    # sweep.json records the command typed, not a worker's own (--no-report, --threads).
    command = json.loads((out / "sweep.json").read_text())["command"]
    assert command.startswith("qsnn sweep --allocations 1/2/1,2/1/1,1/1/2")
    assert "--workers 2" in command and "--no-report" not in command


@pytest.mark.slow  # torchrun with two processes (~40 s)
def test_a_torchrun_sweep_trains_every_run_on_every_rank_and_reports_once(tmp_path: Path):
    """Under torchrun the ranks train each run together (no rank leaves a run locked by rank
    0 to "another worker", which would hang the other in its collective), and rank 0 alone
    writes sweep.json, the runs' files and the report."""
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "sw"
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "qsnn.cli",
        "sweep",
        "--allocations",
        "1/2/1,2/1/1",
        "--out",
        str(out),
        "--device",
        "cpu",
        *_flags(),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(PYTHONUNBUFFERED="1", TORCHDYNAMO_DISABLE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "result.json").read_text())["environment"]["world_size"] == 2
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert done.stdout.count("report: ") == 1  # rank 0 alone reports
    assert "back to it later" not in done.stderr


def test_sweep_progress_says_runs_done_and_time_left(caplog) -> None:
    """Issue 18: a sweep logs 'k of N runs done' with the elapsed and estimated time left
    (mean time per run so far times the runs left) after every run it trained."""
    import logging

    from qsnn.sweep.runner import _eta, _until_done

    assert _eta(30, 1, 4) == "30 s elapsed, about 2 min left"  # 30 s per run, 3 left: 90 s
    assert _eta(720, 2, 6) == "12 min elapsed, about 24 min left"
    assert _eta(100, 3, 3) == "2 min elapsed"

    def attempt(i: int):
        if i == 0:
            time.sleep(1.05)  # "trained"; run 1 is found finished (no line for it)
        return {"run": i}

    with caplog.at_level(logging.INFO, logger="qsnn.sweep.runner"):
        assert _until_done(2, attempt, poll_s=0.01) == [{"run": 0}, {"run": 1}]
    lines = [r.getMessage() for r in caplog.records if "runs done" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("sweep: 1 of 2 runs done, 1 s elapsed, about")
