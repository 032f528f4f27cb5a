"""Issue 16: the Optuna job board (claims, heartbeats, retries), sweeps shared through a storage
(SQLite and a real PostgreSQL server), and ``qsnn search`` over per-layer allocations."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from qsnn.data import raw_input_bits
from qsnn.train import TrainConfig

pytest.importorskip("sklearn")  # the embedded digits dataset
optuna = pytest.importorskip("optuna", reason="Optuna is the optional extra qsnn[search]")

from qsnn.sweep.search import OBJECTIVES, search  # noqa: E402
from qsnn.sweep.study import JobBoard  # noqa: E402
from test_train import qsnn_run, qsnn_start  # noqa: E402

BASE = dict(model="small_convnet", dataset="digits", bits="1/2/1", epochs=1, batch_size=64,
            lr=3e-3, precision="fp32", progress=False, threads=1, precise_bn=256,
            profile_batches=0, overrides={"head": 16})  # fmt: skip
SWEEP_FLAGS = ["--model", "small_convnet", "--dataset", "digits", "--epochs", "1",
               "--batch-size", "64", "--precision", "fp32", "--no-progress",
               "--profile-batches", "0", "--precise-bn", "256"]  # fmt: skip


def _board(tmp_path: Path, name: str = "jobs", **kw) -> JobBoard:
    return JobBoard(f"sqlite:///{tmp_path / 'study.db'}", name, **kw)


# -- the job board ---------------------------------------------------------------------------
def test_a_claimed_job_is_held_once_and_its_result_is_kept(tmp_path: Path) -> None:
    board = _board(tmp_path)
    claim = board.claim("run-a")
    assert claim is not None
    assert board.claim("run-a") is None  # held: a second claim withdraws at once
    assert _board(tmp_path).claim("run-a") is None  # also through another connection
    claim.finish(0.75, {"test_acc_best": 0.7, "bits": "1/2/1"})
    assert board.result("run-a") == {"test_acc_best": 0.7, "bits": "1/2/1"}
    assert board.claim("run-a") is None  # done: never trained again
    done = [t for t in board.study.trials if t.state.name == "COMPLETE"]
    assert [t.value for t in done] == [0.75]


def test_a_failed_job_is_free_again(tmp_path: Path) -> None:
    board = _board(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), board.holding("run-b") as claim:
        assert claim is not None
        raise RuntimeError("boom")
    again = board.claim("run-b")
    assert again is not None  # the failed trial is no claim
    failed = [t for t in board.study.trials if t.state.name == "FAIL"]
    assert any("boom" in t.user_attrs.get("qsnn_error", "") for t in failed)
    again.fail("gave up")


def test_a_dead_workers_claim_is_retried_after_its_heartbeat_stops(tmp_path: Path) -> None:
    board = _board(tmp_path, heartbeat_s=1, grace_s=2)
    dead = board.claim("run-c")
    assert dead is not None
    dead._stop.set()  # its heartbeat thread ends as a killed process's would
    dead._thread.join()
    assert board.claim("run-c") is None  # still within the grace period
    time.sleep(3.2)
    retry = board.claim("run-c")
    assert retry is not None and retry.number > dead.number
    states = {t.number: t.state.name for t in board.study.trials}
    assert states[dead.number] == "FAIL"
    retry.finish(0.5, {})


def test_racing_claims_give_each_job_to_one_worker(tmp_path: Path) -> None:
    """Four threads, each with its own database connection, claim the same 8 jobs at once."""
    _board(tmp_path)  # create the study first
    keys = [f"job-{i}" for i in range(8)]
    won: dict[str, list[int]] = {k: [] for k in keys}
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            board = _board(tmp_path)
            start.wait()
            for key in keys:
                claim = board.claim(key)
                if claim is not None:
                    won[key].append(w)
                    claim.finish(1.0, {})
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(len(v) == 1 for v in won.values()), won


def test_optuna_is_optional_and_the_core_never_imports_it(tmp_path: Path) -> None:
    code = (
        "import sys; import qsnn, qsnn.cli, qsnn.sweep, qsnn.train, qsnn.metrics\n"
        "assert 'optuna' not in sys.modules, 'the core imported optuna'\n"
        "sys.modules['optuna'] = None  # as if it were not installed\n"
        "from qsnn.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "search", "--model", "small_convnet", "--dataset",
         "digits", "--weights", "1,2", "--out", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "qsnn: error: this needs Optuna, an optional extra of qsnn: pip install "
        "'qsnn[search]' (and a database driver for --storage postgresql://..., e.g. "
        "psycopg2-binary)"
    ]


# -- a search --------------------------------------------------------------------------------
def _hand_s_ace(overrides: dict, input_bits: int) -> float:
    """S-ACE of small_convnet on 8x8 digits at T = 1, by hand: sum over layers of
    MACs * b_w * b_in, MACs = C_out * C_in * 9 * H * W (``same`` padding, pools after the 2nd,
    4th and 5th conv), b_in the previous neuron's b_s (the raw input's for the stem)."""
    convs = [("stem.encoder.stem.conv", 1, 32, 64, None),
             ("features.0.conv", 32, 64, 64, "stem.sn"),
             ("features.2.conv", 64, 64, 16, "features.0.sn"),
             ("features.3.conv", 64, 128, 16, "features.2.sn"),
             ("features.5.conv", 128, 128, 4, "features.3.sn")]  # fmt: skip
    total = 0.0
    for name, c_in, c_out, pixels, prev in convs:
        b_in = input_bits if prev is None else overrides[prev]["s"]
        total += c_out * c_in * 9 * pixels * overrides[name] * b_in
    return total + 128 * 10 * 16 * overrides["features.5.sn"]["s"]  # float head on 128 spikes


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("search") / "s"
    front = search(TrainConfig(**BASE), out, weights=(1, 2), spikes=(1, 2), trials=4,
                   max_s_ace="2/1/1", sampler_seed=0)  # fmt: skip
    return out, front


def test_tiny_search_front_obeys_the_limit_and_counts_s_ace_by_hand(tiny_search) -> None:
    out, front = tiny_search
    board = JobBoard(
        f"sqlite:///{out / 'study.db'}", _study(out), directions=("maximize", "minimize")
    )
    limit = json.loads((out / "search.json").read_text())["max_s_ace"]
    bits8 = raw_input_bits("static")
    # The limit is uniform 2/1/1's S-ACE: w = 2 everywhere, b_s = 1 everywhere, by hand.
    uniform_211 = {n: 2 for n in _weight_layers()} | {n: {"s": 1} for n in _neurons()}
    assert limit == _hand_s_ace(uniform_211, bits8)
    assert front, "no Pareto front"
    for row in front:
        assert row["s_ace"] <= limit
        assert row["s_ace"] == _hand_s_ace(row["layers"], bits8)
    # Every trial that was trained has the S-ACE of its per-layer allocation.
    trained = [t for t in board.study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(trained) == 4
    for t in trained:
        assert t.user_attrs["s_ace"] == _hand_s_ace(t.user_attrs["overrides"], bits8)
    # The front is exactly the non-dominated finished trials (checked here independently).
    done = [t for t in trained if t.state.name == "COMPLETE"]
    pts = {t.number: (t.values[0], t.values[1]) for t in done}
    expect = {
        n
        for n, (a, c) in pts.items()
        if not any(a2 >= a and c2 <= c and (a2, c2) != (a, c) for a2, c2 in pts.values())
    }
    assert {r["trial"] for r in front} == expect
    for name in ("search.json", "trials.csv", "pareto.md", "pareto.json", "pareto.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name


def test_tiny_search_trains_the_uniform_allocations_first_and_fully(tiny_search) -> None:
    out, _ = tiny_search
    board = JobBoard(
        f"sqlite:///{out / 'study.db'}", _study(out), directions=("maximize", "minimize")
    )
    trials = sorted(board.study.trials, key=lambda t: t.number)
    uniform = [t for t in trials if t.user_attrs.get("uniform")]
    # Inside the limit (S-ACE of 2/1/1): 1/1/1, 1/2/1 and 2/1/1; 2/2/1 is over it.
    assert sorted(t.user_attrs["bits"] for t in uniform) == ["1/1/1", "1/2/1", "2/1/1"]
    assert [t.number for t in uniform] == [0, 1, 2]  # enqueued: trained before any sampled one
    assert all(t.state.name == "COMPLETE" and t.user_attrs["qsnn_epochs"] == 1 for t in uniform)
    for t in trials:  # one run directory per trained trial, each epoch written once
        if t.state.name not in ("COMPLETE", "PRUNED"):
            continue
        runs = list((out / "runs").glob(f"*-{t.user_attrs['qsnn_key']}"))
        assert len(runs) == 1
        lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == t.user_attrs["qsnn_epochs"]


def test_a_finished_search_resumes_without_training_and_refuses_other_settings(
    tiny_search, tmp_path: Path
) -> None:
    out, front = tiny_search
    before = sorted(p.name for p in (out / "runs").iterdir())
    again = search(TrainConfig(**BASE), out, weights=(1, 2), spikes=(1, 2), trials=4,
                   max_s_ace="2/1/1", sampler_seed=0, resume=True)  # fmt: skip
    assert [r["trial"] for r in again] == [r["trial"] for r in front]
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    with pytest.raises(ValueError, match="already holds a search; pass --resume"):
        search(TrainConfig(**BASE), out, weights=(1, 2), spikes=(1, 2), trials=4,
               max_s_ace="2/1/1")  # fmt: skip
    with pytest.raises(ValueError, match=r"other settings \(.*trials"):
        search(TrainConfig(**BASE), out, weights=(1, 2), spikes=(1, 2), trials=9,
               max_s_ace="2/1/1", resume=True)  # fmt: skip


def test_pruning_compares_only_with_trials_of_no_higher_s_ace(tmp_path: Path) -> None:
    """The rule by hand (eta = 3): after epoch 1 a trial stops when it is outside the best
    ceil((peers + 1) / 3) of the trials that reached epoch 1 at no higher S-ACE."""
    from types import SimpleNamespace

    from qsnn.sweep.search import Pruned, _pruner

    board = _board(tmp_path, directions=("maximize", "minimize"))
    create = optuna.trial.create_trial
    for val, s_ace in [(0.9, 10.0), (0.8, 9.0), (0.5, 5.0), (0.95, 50.0)]:  # the last: costlier
        board.study.add_trial(create(state=optuna.trial.TrialState.PRUNED,
                                     user_attrs={"s_ace": s_ace, "qsnn_val_1": val}))  # fmt: skip
    config = TrainConfig(**{**BASE, "epochs": 3})
    me = SimpleNamespace(number=99)
    # S-ACE 20: peers 0.9, 0.8, 0.5 (not the costlier 0.95); keep the best ceil(4 / 3) = 2.
    with pytest.raises(Pruned, match="not in the best 1/3 of 4 trials"):
        _pruner(board, me, 20.0, 3, config)({"epoch": 1, "val_acc": 0.6})  # 2 better: stop
    _pruner(board, me, 20.0, 3, config)({"epoch": 1, "val_acc": 0.85})  # 1 better: go on
    # S-ACE 60: the costlier 0.95 is a peer too; of 5 keep 2: 0.92 (1 better) goes on,
    # 0.85 (0.9 and 0.95 better) stops.
    _pruner(board, me, 60.0, 3, config)({"epoch": 1, "val_acc": 0.92})
    with pytest.raises(Pruned, match="of 5 trials"):
        _pruner(board, me, 60.0, 3, config)({"epoch": 1, "val_acc": 0.85})
    _pruner(board, me, 5.0, 3, config)({"epoch": 1, "val_acc": 0.1})  # 1 peer < eta - 1: go on
    _pruner(board, me, 20.0, 3, config)({"epoch": 3, "val_acc": 0.1})  # the last epoch: never


def test_search_arguments_are_checked_before_any_training(tmp_path: Path) -> None:
    base = TrainConfig(**BASE)
    for kwargs, match in [
        (dict(objectives=("s_ace",)), "'acc' and any of"),
        (dict(objectives=("acc", "speed")), "'acc' and any of"),
        (dict(trials=0), "--trials must be >= 1"),
        (dict(sampler="grid"), "--sampler must be tpe or nsga2"),
        (dict(eta=1), "--eta must be >= 2"),
        (dict(weights=()), "--weights must list"),
    ]:
        with pytest.raises(ValueError, match=match):
            search(base, tmp_path / "x", **{"weights": (1, 2), **kwargs})
    assert set(OBJECTIVES) == {"acc", "s_ace", "params_16", "fps"}
    assert not (tmp_path / "x" / "runs").exists()


def _study(out: Path) -> str:
    import sqlite3

    with sqlite3.connect(out / "study.db") as db:
        return db.execute("select study_name from studies").fetchone()[0]


def _weight_layers() -> list[str]:
    return ["stem.encoder.stem.conv", "features.0.conv", "features.2.conv", "features.3.conv",
            "features.5.conv"]  # fmt: skip


def _neurons() -> list[str]:
    return ["stem.sn", "features.0.sn", "features.2.sn", "features.3.sn", "features.5.sn"]


# -- sweeps shared through a storage, by real worker processes ---------------------------------
def _sweep_runs(out: Path) -> dict[str, int]:
    """run directory -> lines of its metrics.jsonl."""
    return {p.parent.name: len(p.read_text().splitlines())
            for p in (out / "runs").glob("*/metrics.jsonl")}  # fmt: skip


def _two_workers(url: str, out: Path, cwd: Path, extra: tuple[str, ...] = ()) -> None:
    args = ("sweep", *SWEEP_FLAGS, "--budget", "4", "--weights", "1,2", "--storage", url,
            "--out", str(out), "--threads", "1", "--no-report", *extra)  # fmt: skip
    procs = [qsnn_start(*args, cwd=cwd, log=cwd / f"w{i}.log") for i in range(2)]
    for proc, log in procs:
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        proc._qsnn_log.close()  # type: ignore[attr-defined]


@pytest.mark.slow  # two real worker processes (~40 s)
def test_two_sweep_workers_on_sqlite_train_each_run_once(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    _two_workers(f"sqlite:///{tmp_path / 'jobs.db'}", out, tmp_path)
    runs = _sweep_runs(out)
    assert len(runs) == 5 and set(runs.values()) == {1}, runs  # 5 allocations of budget 4
    board = JobBoard(f"sqlite:///{tmp_path / 'jobs.db'}", _sweep_study(tmp_path / "jobs.db"))
    done = [t for t in board.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 5 and len({t.user_attrs["qsnn_key"] for t in done}) == 5


@pytest.mark.slow  # real worker processes, one killed (~60 s)
def test_a_killed_sweep_worker_is_retried_by_another(tmp_path: Path) -> None:
    import signal

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    out = tmp_path / "sweep"
    args = ("sweep", *SWEEP_FLAGS, "--epochs", "4", "--budget", "4", "--weights", "1",
            "--allocations", "1/1/4", "--storage", url, "--out", str(out), "--threads", "1",
            "--no-report", "--checkpoint-every", "0.5")  # fmt: skip
    env = {**os.environ, "QSNN_HEARTBEAT_S": "1"}
    victim = subprocess.Popen([sys.executable, "-m", "qsnn", *args], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    # A generous deadline: on a loaded 2-core machine the first checkpoint (data, compile,
    # half a second of training) took over 2 minutes.
    deadline = time.time() + 600
    while (
        not list(out.glob("runs/*/checkpoint.pt"))
        and victim.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert list(out.glob("runs/*/checkpoint.pt")), "the first worker never saved a checkpoint"
    proc = subprocess.run([sys.executable, "-m", "qsnn", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr
    board = JobBoard(url, _sweep_study(tmp_path / "jobs.db"))
    states = sorted(t.state.name for t in board.study.trials)
    assert states == ["COMPLETE", "FAIL"], states  # the dead claim, then the finished retry


def _only_study(url: str) -> str:
    names = optuna.get_all_study_names(url)
    assert len(names) == 1, names
    return names[0]


def _sweep_study(db: Path) -> str:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("select study_name from studies").fetchone()[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path: Path):
    """A throwaway PostgreSQL server (Debian's ``postgresql``: initdb, pg_ctl) on a free port;
    its URL. Run as the ``postgres`` user when the tests run as root (initdb refuses root)."""
    pytest.importorskip("psycopg2", reason="PostgreSQL driver psycopg2-binary not installed")
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    bindir = next((d for d in versions if (d / "initdb").exists()), None)
    initdb = shutil.which("initdb") or (str(bindir / "initdb") if bindir else None)
    pg_ctl = shutil.which("pg_ctl") or (str(bindir / "pg_ctl") if bindir else None)
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed "
                    "(Debian: apt-get install postgresql)")  # fmt: skip
    # Outside pytest's tmp_path: its parents are closed to the server's user when run as root.
    home = Path(tempfile.mkdtemp(prefix="qsnn-pg-"))
    data = home / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root and no runuser to start PostgreSQL as another user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(home, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True,  # noqa: E731
                                      timeout=120)  # fmt: skip
    init = run(initdb, "-D", str(data), "-U", "qsnn", "--auth=trust", "-E", "UTF8")
    assert init.returncode == 0, init.stderr
    log = home / "server.log"
    start = run(pg_ctl, "-D", str(data), "-l", str(log), "-w", "-o",
                f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    assert start.returncode == 0, start.stderr + (log.read_text() if log.exists() else "")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="qsnn", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE qsnn_jobs")
        conn.close()
        yield f"postgresql+psycopg2://qsnn@127.0.0.1:{port}/qsnn_jobs"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # a real PostgreSQL server and two worker processes (~45 s)
def test_two_sweep_workers_on_a_real_postgresql_server(postgres: str, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    t0 = time.perf_counter()
    _two_workers(postgres, out, tmp_path)
    wall = time.perf_counter() - t0
    runs = _sweep_runs(out)
    assert len(runs) == 5 and set(runs.values()) == {1}, runs
    import psycopg2

    params = postgres.removeprefix("postgresql+psycopg2://qsnn@127.0.0.1:").split("/")
    conn = psycopg2.connect(host="127.0.0.1", port=int(params[0]), user="qsnn", dbname=params[1])
    rows = conn.cursor()
    rows.execute("select state, count(*) from trials group by state order by state")
    states = dict(rows.fetchall())
    conn.close()
    assert states.get("COMPLETE") == 5, states
    # What the board holds is what the runs wrote: one trial per run directory's key.
    keys = {p.name.rsplit("-", 1)[1] for p in (out / "runs").iterdir()}
    board = JobBoard(postgres, _only_study(postgres))
    done = {t.user_attrs["qsnn_key"] for t in board.study.trials if t.state.name == "COMPLETE"}
    assert done == keys
    print(f"postgres sweep: 5 runs by 2 workers in {wall:.1f} s; trials by state {states}")


def test_sweep_storage_is_refused_under_torchrun_style_launches(monkeypatch, tmp_path) -> None:
    from qsnn import Bits
    from qsnn.sweep import sweep

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun the ranks of one job"):
        sweep(TrainConfig(**{**BASE, "overrides": None}), [Bits.parse("1/2/1")], tmp_path,
              storage=f"sqlite:///{tmp_path / 'j.db'}")  # fmt: skip


@pytest.mark.slow  # a real CLI process (~15 s); the search itself is tested in process above
def test_cli_search_prints_the_front(tmp_path: Path) -> None:
    proc = qsnn_run("search", "--model", "small_convnet", "--dataset", "digits", "--bits",
                    "1/2/1", "--weights", "1", "--trials", "1", "--epochs", "1", "--batch-size",
                    "64", "--precision", "fp32", "--threads", "1", "--no-progress",
                    "--profile-batches", "0", "--precise-bn", "128", "--override", "head=16",
                    "--out", str(tmp_path / "s"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Pareto front (1 trials" in proc.stdout and "uniform 1/2/1" in proc.stdout
    assert (tmp_path / "s" / "pareto.md").is_file()


def test_a_worker_with_other_threads_joins_the_same_search(tiny_search) -> None:
    """Fields that do not shape a run (threads, progress, device, data root) may differ
    between the workers of one search: ``--workers N`` gives each its share of the cores."""
    out, front = tiny_search
    joined = search(
        TrainConfig(**{**BASE, "threads": 2, "progress": True}),
        out,
        weights=(1, 2),
        spikes=(1, 2),
        trials=4,
        max_s_ace="2/1/1",
        resume=True,
    )
    assert [r["trial"] for r in joined] == [r["trial"] for r in front]


def test_a_worker_joining_by_hand_draws_its_own_sampler_seed(monkeypatch, tmp_path: Path) -> None:
    """The same search command on two machines (``--resume``, no ``--sampler-seed``) must not
    replay one sequence of proposals; a new search, or a given seed, keeps its seed."""
    import importlib

    from qsnn.cli import main

    search_module = importlib.import_module("qsnn.sweep.search")  # the module, not the function

    seeds: list[int | None] = []

    def record(*args, sampler_seed=None, **kwargs):  # stands in for the training loop only
        seeds.append(sampler_seed)
        return []

    monkeypatch.setattr(search_module, "search", record)
    flags = ["search", "--weights", "1,2", "--out", str(tmp_path / "s"), "--seed", "3"]
    for extra in ([], ["--resume"], ["--resume"], ["--resume", "--sampler-seed", "5"]):
        assert main([*flags, *extra]) == 0
    assert seeds[0] == 3 and seeds[3] == 5
    assert seeds[1] != 3 and seeds[2] != 3 and seeds[1] != seeds[2]
