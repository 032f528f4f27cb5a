"""Every bad invocation ends in one ``qsnn: error:`` line (issue 15, SPEC §10).

A table of bad command lines, run in process through ``qsnn.cli.main``: for each, a non-zero
exit, no traceback, exactly one line on stderr, ``qsnn: error: ...`` (argparse's own errors
too), and in it the flag or the file at fault. The crafted files are written here: a tiny
finished run on the embedded digits, its copies with a garbage ``config.json``, a truncated
checkpoint and an infinite batch-norm variance, JSON of the wrong shape, a truncated integer
program. Two more tests run the real console script in a subprocess: a write that hits a
file-size limit (the disk-full case) and the ``--`` hint for values that start with ``-``.
"""

from __future__ import annotations

import resource
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qsnn import cli
from qsnn.train import TrainConfig, train
from test_train import qsnn_run


@pytest.fixture(scope="module", autouse=True)
def _eager_kernels():
    """No kernel compilation in these in-process runs (as tests/test_train.py)."""
    import torch._dynamo.config

    with torch._dynamo.config.patch(disable=True):
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished tiny run and the crafted files the table points at."""
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    threads = torch.get_num_threads()
    try:
        train(TrainConfig(epochs=1, batch_size=64, lr=3e-3, bits="4/4/1", precision="fp32",
                          progress=False, profile_batches=0, device="cpu", val_size=200,
                          threads=1), run)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    out: dict[str, Path] = {"root": root, "run": run}

    def variant(name: str, change: Callable[[Path], None]) -> Path:
        """A copy of the run with ``change`` applied to it."""
        copy = root / name
        shutil.copytree(run, copy)
        change(copy)
        return copy

    def truncate(copy: Path) -> None:
        for name in ("best.pt", "checkpoint.pt"):
            data = (copy / name).read_bytes()
            (copy / name).write_bytes(data[: len(data) // 3])

    def infinite_variance(copy: Path) -> None:
        for name in ("best.pt", "checkpoint.pt"):
            ckpt = torch.load(copy / name, weights_only=True)
            key = next(k for k in ckpt["model"] if k.endswith("running_var"))
            ckpt["model"][key] = torch.full_like(ckpt["model"][key], float("inf"))
            torch.save(ckpt, copy / name)

    out["bad_config"] = variant("bad-config", lambda c: (c / "config.json").write_text("{ x"))
    out["list_config"] = variant("list-config", lambda c: (c / "config.json").write_text("[1]"))
    out["truncated"] = variant("truncated-ckpt", truncate)
    out["inf_run"] = variant("inf-bn", infinite_variance)

    program = root / "program"
    program.mkdir()
    (program / "program.npz").write_bytes(b"PK\x03\x04 truncated zip")
    out["program"] = program

    (root / "list.json").write_text("[1, 2]")
    out["list_json"] = root / "list.json"
    (root / "a_file").write_text("x")
    out["a_file"] = root / "a_file"

    sweep_list = root / "sweep-list"
    (sweep_list / "runs" / "4-4-1-seed0").mkdir(parents=True)
    (sweep_list / "runs" / "4-4-1-seed0" / "result.json").write_text("[]")
    out["sweep_list"] = sweep_list

    sweep_bad = root / "sweep-bad"
    shutil.copytree(sweep_list, sweep_bad)
    (sweep_bad / "sweep.json").write_text("{ truncated")
    out["sweep_bad"] = sweep_bad

    sweep_settings_list = root / "sweep-settings-list"
    sweep_settings_list.mkdir()
    (sweep_settings_list / "sweep.json").write_text("[]")
    out["sweep_settings_list"] = sweep_settings_list
    return out


P = ["--model", "small_convnet", "--bits", "4/2/2"]
TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--no-progress", "--profile-batches", "0"]

#: (id, argv from the fixture's paths, what the error line must name)
CASES: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("bits-dash", lambda f: ["bits", "-1/2/2"], "qsnn bits -- -1/2/2"),
    ("bits-two-fields", lambda f: ["bits", "4/2"], "4/2"),
    ("bits-bad-bw", lambda f: ["bits", "9/2/2"], "b_w"),
    ("allocations-zero", lambda f: ["allocations", "--budget", "0"], "--budget"),
    ("allocations-word", lambda f: ["allocations", "--budget", "four"], "--budget"),
    ("models-extra-arg", lambda f: ["models", "extra"], "extra"),
    (
        "profile-unknown-model",
        lambda f: ["profile", "--model", "nosuch", "--bits", "4/2/2"],
        "nosuch",
    ),
    ("profile-batch-zero", lambda f: ["profile", *P, "--batch", "0"], "--batch"),
    ("profile-input-size-word", lambda f: ["profile", *P, "--input-size", "big"], "--input-size"),
    ("profile-input-too-small", lambda f: ["profile", *P, "--input-size", "3x4x4"], "8x8"),
    ("profile-input-bits-zero", lambda f: ["profile", *P, "--input-bits", "0"], "--input-bits"),
    ("profile-json-dir", lambda f: ["profile", *P, "--json", str(f["root"])], "--json"),
    (
        "profile-json-under-file",
        lambda f: ["profile", *P, "--json", f"{f['a_file']}/p.json"],
        "--json",
    ),
    ("profile-json-proc", lambda f: ["profile", *P, "--json", "/proc/qsnn/p.json"], "--json"),
    ("train-unknown-dataset", lambda f: ["train", "--dataset", "nosuch"], "nosuch"),
    ("train-unknown-model", lambda f: [*TRAIN, "--model", "nosuch"], "nosuch"),
    ("train-epochs-fraction", lambda f: [*TRAIN, "--epochs", "2.5"], "--epochs"),
    ("train-lr-inf", lambda f: [*TRAIN, "--lr", "inf"], "lr"),
    ("train-batch-zero", lambda f: [*TRAIN, "--batch-size", "0"], "batch"),
    ("train-neuron-key", lambda f: [*TRAIN, "--neuron", "nosuch=1"], "--neuron"),
    (
        "train-config-missing",
        lambda f: [*TRAIN, "--config", str(f["root"] / "none.json")],
        "none.json",
    ),
    ("train-config-list", lambda f: [*TRAIN, "--config", str(f["list_json"])], "list.json"),
    ("train-out-file", lambda f: [*TRAIN, "--out", str(f["a_file"])], "--out"),
    ("train-out-under-file", lambda f: [*TRAIN, "--out", f"{f['a_file']}/run"], "--out"),
    ("train-out-proc", lambda f: [*TRAIN, "--out", "/proc/qsnn-run"], "--out"),
    ("train-out-name-too-long", lambda f: [*TRAIN, "--out", str(f["root"] / ("x" * 300))], "--out"),
    (
        "train-resume-bad-config",
        lambda f: [*TRAIN, "--resume", "--out", str(f["bad_config"])],
        "config.json",
    ),
    ("train-existing-run", lambda f: [*TRAIN, "--out", str(f["run"])], "--resume"),
    ("sweep-weights-word", lambda f: ["sweep", "--budget", "4", "--weights", "one"], "--weights"),
    ("sweep-bad-allocation", lambda f: ["sweep", "--allocations", "4/4/x", "--dry-run"], "4/4/x"),
    ("sweep-seeds-zero", lambda f: ["sweep", "--budget", "4", "--seeds", "0"], "--seeds"),
    (
        "sweep-list-settings",
        lambda f: [
            "sweep",
            "--budget",
            "4",
            "--dataset",
            "digits",
            "--out",
            str(f["sweep_settings_list"]),
        ],
        "sweep.json",
    ),
    ("report-not-a-sweep", lambda f: ["report", str(f["root"] / "nothing")], "nothing"),
    ("report-list-result", lambda f: ["report", str(f["sweep_list"])], "result.json"),
    ("report-bad-settings", lambda f: ["report", str(f["sweep_bad"])], "sweep.json"),
    ("eval-missing-run", lambda f: ["eval", str(f["root"] / "nothing")], "nothing"),
    (
        "eval-time-steps-zero",
        lambda f: ["eval", str(f["run"]), "--time-steps", "0"],
        "--time-steps",
    ),
    ("eval-garbage-config", lambda f: ["eval", str(f["bad_config"])], "config.json"),
    ("eval-list-config", lambda f: ["eval", str(f["list_config"])], "config.json"),
    ("eval-truncated-checkpoint", lambda f: ["eval", str(f["truncated"])], "best.pt"),
    ("deploy-out-proc", lambda f: ["deploy", str(f["run"]), "--out", "/proc/qsnn-deploy"], "--out"),
    ("deploy-out-file", lambda f: ["deploy", str(f["run"]), "--out", str(f["a_file"])], "--out"),
    (
        "deploy-non-finite",
        lambda f: ["deploy", str(f["inf_run"]), "--out", str(f["root"] / "inf-program")],
        "running_var",
    ),
    (
        "verify-agreement-nan",
        lambda f: ["verify", str(f["run"]), "--min-agreement", "nan"],
        "--min-agreement",
    ),
    (
        "verify-agreement-negative",
        lambda f: ["verify", str(f["run"]), "--min-agreement", "-0.5"],
        "--min-agreement",
    ),
    ("verify-limit-zero", lambda f: ["verify", str(f["run"]), "--limit", "0"], "--limit"),
    ("verify-limit-negative", lambda f: ["verify", str(f["run"]), "--limit", "-5"], "--limit"),
    ("verify-batch-zero", lambda f: ["verify", str(f["run"]), "--batch-size", "0"], "--batch-size"),
    (
        "verify-truncated-program",
        lambda f: ["verify", str(f["run"]), "--program", str(f["program"])],
        "program.npz",
    ),
    (
        "verify-json-proc",
        lambda f: ["verify", str(f["run"]), "--json", "/proc/qsnn/v.json"],
        "--json",
    ),
    ("hw-clock-nan", lambda f: ["hw", *P, "--clock", "nan"], "--clock"),
    ("hw-dma-negative", lambda f: ["hw", *P, "--dma", "-4"], "--dma"),
    ("hw-bad-list", lambda f: ["hw", "--model", "small_convnet", "--bits", "4/2/2,x"], "'x'"),
    ("hw-json-dir", lambda f: ["hw", *P, "--json", str(f["root"])], "--json"),
    ("demo-steps-zero", lambda f: ["demo", "--steps", "0"], "--steps"),
    ("demo-bad-bits", lambda f: ["demo", "--bits", "2/2"], "2/2"),
    ("allocations-w-zero", lambda f: ["allocations", "--budget", "4", "--w", "0"], "b_w"),
    ("allocations-no-allocation", lambda f: ["allocations", "--budget", "3"], "budget 3"),
    ("hw-array-zero", lambda f: ["hw", *P, "--array", "0x16"], "--array"),
    ("eval-batches-zero", lambda f: ["eval", str(f["run"]), "--batches", "0"], "--batches"),
    ("train-cifar-missing", lambda f: [*TRAIN[:1], "--dataset", "cifar10", "--data-root",
                                       str(f["root"] / "no-data")], "no-data"),
    ("unknown-command", lambda f: ["fly"], "fly"),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``qsnn ARGV`` in process: (exit status, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as done:  # argparse's own errors
        code = done.code if isinstance(done.code, int) else 1
    return code, capsys.readouterr().err


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("argv", "names"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_invocation_is_one_error_line(argv, names, files, capsys) -> None:
    code, err = run_cli(argv(files), capsys)  # stdout may hold progress; stderr: the error
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    final = lines[-1]
    assert len(lines) == 1, err
    assert final.startswith("qsnn: error: "), final
    assert names in final, final


def test_failed_train_leaves_the_run_untouched(files, capsys) -> None:
    """A refused `train` on an existing run writes nothing into it."""
    run = files["run"]
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    code, _ = run_cli([*TRAIN, "--out", str(run)], capsys)
    assert code == 2
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """The write of ``--json`` hits a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored the
    write fails with EFBIG as on a full disk): one line naming the file, exit 2, and no partial
    file left under the name."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = tmp_path / "profile.json"
    done = qsnn_run("profile", *P, "--json", str(out), cwd=tmp_path, preexec=limit)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("qsnn: error: ") and "profile.json" in line, line
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_dash_value_after_double_dash_is_read(tmp_path: Path) -> None:
    done = qsnn_run("bits", "--", "-1/2/2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("qsnn: error: Bits.w")


def test_demo_refuses_zero_steps() -> None:
    """The library call, not only the flag: no accuracy is reported for an untrained net."""
    from qsnn.allocation import Bits
    from qsnn.demo import run_demo

    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        run_demo(Bits.parse("2/2/2"), steps=0)
