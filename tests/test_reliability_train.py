"""Reliability of training runs (issue 15, the training side): only finite checkpoints, the
settings a checkpoint was trained with enforced on resume, one writer per run directory,
SIGTERM handled as Ctrl-C, stale temporary files removed, bad settings and corrupt run files
reported in one line that names the field or file, absolute data roots."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from qsnn import cli
from qsnn.io import (
    LOCK_FILE,
    CorruptFileError,
    DirectoryInUseError,
    lock_directory,
    read_json_object,
    write_atomic,
)
from qsnn.train import (
    CheckpointError,
    NonFiniteLossError,
    TrainConfig,
    TrainingInterrupted,
    build_model,
    fit,
    load_checkpoint,
    load_data,
    load_run,
    save_checkpoint,
    train,
)
from qsnn.train.run import read_config
from test_data_core import _write_cifar10
from test_train import (
    QSNN,
    _env,
    _finish,
    assert_same_tensors,
    leftover_temp_files,
    metric_lines,
    metrics,
    one_error_line,
    qsnn_start,
    wait_until,
)

IO_SOURCE = Path(__file__).resolve().parents[1] / "src" / "qsnn" / "io.py"
# Tiny runs: digits, 11 steps of 128 per epoch, no precise BN, no final profile.
QUICK = dict(
    epochs=1, batch_size=128, lr=3e-3, precision="fp32", deterministic=True, threads=1,
    progress=False, profile_batches=0, precise_bn=0, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _eager_kernels():
    """Run the neuron kernels as the CLI subprocesses do (``TORCHDYNAMO_DISABLE``), so that an
    in-process run and a subprocess run compute the same numbers."""
    import torch._dynamo.config

    with torch._dynamo.config.patch(disable=True):
        yield


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def all_tensors(value: Any, name: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor of a loaded checkpoint, nested containers included."""
    if torch.is_tensor(value):
        return [(name, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in all_tensors(v, f"{name}.{k}")]
    if isinstance(value, (list, tuple)):
        return [t for i, v in enumerate(value) for t in all_tensors(v, f"{name}.{i}")]
    return []


def assert_all_finite(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    tensors = [(n, t) for n, t in all_tensors(state) if t.is_floating_point()]
    assert tensors, f"{path} holds no floating-point tensor"
    bad = [n for n, t in tensors if not torch.isfinite(t).all()]
    assert not bad, f"{path} holds non-finite tensors: {bad}"


def files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


# -- 1. a checkpoint is written only when every tensor in it is finite -------------------------
class InfVarianceAt(nn.Module):
    """Wraps a model; at training forward number ``step`` its first batch norm's running
    variance becomes infinite (what a huge learning rate does while the loss stays finite)."""

    def __init__(self, inner: nn.Module, step: int) -> None:
        super().__init__()
        self.inner, self.step, self.calls = inner, step, 0
        norms = nn.modules.batchnorm._BatchNorm
        self.bn_name = next(n for n, m in inner.named_modules() if isinstance(m, norms))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.step:  # new storage: the graph's saved tensors stay valid
                bn = self.inner.get_submodule(self.bn_name)
                bn.running_var.data = torch.full_like(bn.running_var, float("inf"))
        return out


def test_inf_batch_norm_variance_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
):
    config = TrainConfig(**{**QUICK, "epochs": 3})
    data = load_data(config)
    steps = len(data.train) // config.batch_size
    model = InfVarianceAt(build_model(config, data.train), 2 * steps)  # epoch 2's last step
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, data, config, out_dir=out)
    message = str(info.value)
    assert f"inner.{model.bn_name}.running_var" in message and "inf" in message, message
    assert "epoch 2" in message and "\n" not in message, message
    assert str(out / "checkpoint.pt") in message, message

    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 0)
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == 1
    assert_all_finite(out / "checkpoint.pt")
    assert_all_finite(out / "best.pt")
    assert len(metric_lines(out)) == 1
    assert not (out / "result.json").exists()
    assert leftover_temp_files(out) == []


def test_a_huge_learning_rate_leaves_no_inf_checkpoint(tmp_path: Path):
    """The run of the issue: ``--lr 1e4`` overflows the batch-norm variances in epoch 1 while
    the loss is finite; nothing non-finite may reach the disk (before: checkpoint.pt and
    best.pt held ``inf`` running variances)."""
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"running_var holds inf after epoch 1"):
        train(TrainConfig(**{**QUICK, "epochs": 2, "lr": 1e4}), out)
    for name in ("checkpoint.pt", "best.pt"):
        if (out / name).exists():
            assert_all_finite(out / name)
    assert not (out / "checkpoint.pt").exists() and not (out / "best.pt").exists()
    assert metric_lines(out) == []


def test_qsnn_train_with_a_huge_learning_rate_exits_3_naming_the_tensor(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "_setup_logging", lambda verbose=True: None)
    out = tmp_path / "run"
    argv = ["train", "--lr", "1e4", "--epochs", "2", "--batch-size", "128", "--precise-bn", "0",
            "--profile-batches", "0", "--precision", "fp32", "--deterministic", "--threads", "1",
            "--no-progress", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "running_var holds inf after epoch 1" in line and "no checkpoint was written" in line
    assert not (out / "checkpoint.pt").exists() and not (out / "best.pt").exists()


def test_save_checkpoint_refuses_a_non_finite_optimizer_state(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    good = {"model": {"w": torch.ones(3)}, "epoch": 1}
    save_checkpoint(path, good)
    before = path.read_bytes()
    bad = {**good, "optimizer": {"state": {0: {"exp_avg_sq": torch.tensor([1.0, float("nan")])}}}}
    with pytest.raises(NonFiniteLossError, match=r"optimizer\.state\.0\.exp_avg_sq holds nan"):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# -- 2. a checkpoint carries the settings that shaped it ---------------------------------------
def test_resume_without_config_json_refuses_settings_that_contradict_the_checkpoint(
    tmp_path: Path, capsys
):
    out = tmp_path / "run"
    train(TrainConfig(**QUICK, bits="4/4/1"), out)
    (out / "config.json").unlink()
    (out / "result.json").unlink()
    before = files(out)

    with pytest.raises(ValueError, match=r"--bits '2/2/2' \(run: '4/4/1'\)") as info:
        train(TrainConfig(**QUICK, bits="2/2/2"), out, resume=True)
    assert "checkpoint.pt" in str(info.value) and "\n" not in str(info.value)
    assert files(out) == before  # nothing rewritten, no config.json made up

    # The command line, as in the issue: exit 2, one line naming the flag and both values.
    argv = ["train", "--out", str(out), "--resume", "--bits", "2/2/2", "--epochs", "1",
            "--batch-size", "128", "--seed", "3", "--threads", "1", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--bits '2/2/2' (run: '4/4/1')" in line and "--seed 3 (run: 0)" in line, line
    assert files(out) == before

    # The same settings resume (a finished run: its result is written again, at 4/4/1).
    result = train(TrainConfig(**{**QUICK, "progress": True}, bits="4/4/1"), out, resume=True)
    assert result["bits"] == "4/4/1"
    assert json.loads((out / "result.json").read_text())["bits"] == "4/4/1"


def test_a_checkpoint_without_stored_settings_still_resumes_and_loads(tmp_path: Path):
    out = tmp_path / "run"
    config = TrainConfig(**{**QUICK, "epochs": 2})
    train(config, out)
    for name in ("checkpoint.pt", "best.pt"):  # as an older qsnn wrote them
        state = torch.load(out / name, weights_only=True)
        del state["config"]
        torch.save(state, out / name)
    (out / "result.json").unlink()
    result = train(config, out, resume=True)
    assert result["epochs"] == 2 and (out / "result.json").exists()
    model, loaded, _ = load_run(out)
    assert loaded == config
    assert_same_tensors(
        model.state_dict(), torch.load(out / "best.pt", weights_only=True)["model"], "best.pt"
    )


def test_resume_on_other_data_is_refused(tmp_path: Path):
    """``data_root`` may change on resume (the data moved), but not what it holds: a copy with
    other samples would continue the run on another training set."""
    _write_cifar10(tmp_path / "a", n_per_batch=20)
    _write_cifar10(tmp_path / "b", n_per_batch=24)
    config = TrainConfig(**{**QUICK, "batch_size": 16}, dataset="cifar10", val_size=10,
                         data_root=str(tmp_path / "a"))  # fmt: skip
    out = tmp_path / "run"
    train(config, out)
    before = files(out)
    moved = dataclasses.replace(config, data_root=str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"training samples 110 \(run: 90\)") as info:
        train(moved, out, resume=True)
    assert "checkpoint.pt" in str(info.value) and "\n" not in str(info.value)
    assert files(out) == before
    moved = dataclasses.replace(config, data_root=os.path.relpath(tmp_path / "a"))
    assert train(moved, out, resume=True)["samples"]["train"] == 90  # the same data, elsewhere


# -- 3. one writer per run directory -----------------------------------------------------------
HOLD_LOCK = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("qsnn_io", sys.argv[1])
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
with io.lock_directory(sys.argv[2], "run directory"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def hold_lock(directory: Path) -> subprocess.Popen:
    """Another process that holds ``directory``'s lock until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(IO_SOURCE), str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def release(proc: subprocess.Popen) -> int:
    assert proc.stdin is not None
    proc.stdin.close()
    return proc.wait(timeout=60)


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path: Path, capsys):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with pytest.raises(DirectoryInUseError) as info:
            train(TrainConfig(**QUICK), out)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert f"run directory {out} is in use by another process (pid {holder.pid})" in message
        # The command line: one error line, exit 2.
        argv = ["train", "--out", str(out), "--epochs", "1", "--threads", "1", "--no-progress"]
        assert cli.main(argv) == 2
        assert f"(pid {holder.pid})" in one_error_line(capsys.readouterr().err)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        assert release(holder) == 0
    assert not (out / LOCK_FILE).exists()  # released and removed by its owner


def test_the_lock_is_released_when_fit_raises(tmp_path: Path):
    out = tmp_path / "run"
    train(TrainConfig(**QUICK), out)
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(**QUICK), out)  # refused inside fit, after taking the lock
    assert not (out / LOCK_FILE).exists()
    release(hold_lock(out))  # another process takes it at once


def test_the_lock_of_a_killed_process_does_not_block(tmp_path: Path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    holder.kill()  # SIGKILL: no clean-up, the lock file stays
    holder.wait(timeout=60)
    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)
    train(TrainConfig(**QUICK), out)
    assert (out / "result.json").exists() and not (out / LOCK_FILE).exists()


def test_lock_directory_is_exclusive_within_one_process_too(tmp_path: Path):
    with lock_directory(tmp_path / "d") as path:
        assert path.read_text().strip() == str(os.getpid())
        with (
            pytest.raises(DirectoryInUseError, match=rf"pid {os.getpid()}"),
            lock_directory(tmp_path / "d"),
        ):
            pass
    with lock_directory(tmp_path / "d"):  # free again after the block
        pass


# -- 4. SIGTERM is Ctrl-C ----------------------------------------------------------------------
TWO_EPOCHS = TrainConfig(**{**QUICK, "epochs": 2})


@pytest.fixture(scope="module")
def two_epoch_reference(tmp_path_factory) -> Path:
    """An uninterrupted run of TWO_EPOCHS."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    out = tmp_path_factory.mktemp("reference") / "run"
    try:
        train(TWO_EPOCHS, out)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return out


def test_sigterm_mid_step_saves_and_resumes_exactly(two_epoch_reference: Path, tmp_path: Path):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    config = TWO_EPOCHS
    steps = len(load_data(config).train) // config.batch_size
    ref = two_epoch_reference

    calls = {"n": 0}

    def hook(optimizer, args, kwargs):
        calls["n"] += 1
        if calls["n"] == steps + 4:  # before epoch 2's 4th optimizer step: it completes
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    handle = register_optimizer_step_pre_hook(hook)
    out = tmp_path / "run"
    try:
        with pytest.raises(TrainingInterrupted, match=r"SIGTERM at epoch 2, step 4.*--resume"):
            train(config, out)
    finally:
        handle.remove()
    assert signal.getsignal(signal.SIGTERM) is before  # fit put the previous handler back
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 4)
    assert state["partial"]["count"] == 4 * config.batch_size
    assert not (out / "result.json").exists()

    train(config, out, resume=True)
    got, want = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(ref / "checkpoint.pt")
    assert_same_tensors(got["model"], want["model"], "model after SIGTERM and resume")
    assert metrics(out) == metrics(ref)


class _MachineLost(Exception):
    """Stands for a kill the process cannot catch (SIGKILL): nothing is saved on the way out."""


def test_periodic_checkpoint_lets_a_killed_run_resume_mid_epoch(
    two_epoch_reference: Path, tmp_path: Path
):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    config = TrainConfig(**{**TWO_EPOCHS.to_dict(), "checkpoint_every": 1e-9})  # every step
    steps = len(load_data(config).train) // config.batch_size
    calls = {"n": 0}

    def hook(optimizer, args, kwargs):
        calls["n"] += 1
        if calls["n"] == steps + 4:  # dies inside epoch 2's 4th step: 3 steps were saved
            raise _MachineLost

    handle = register_optimizer_step_pre_hook(hook)
    out = tmp_path / "run"
    try:
        with pytest.raises(_MachineLost):
            train(config, out)
    finally:
        handle.remove()
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 3)
    assert state["partial"]["count"] == 3 * config.batch_size
    # checkpoint_every is a resumable field: resuming with another interval is allowed.
    train(TWO_EPOCHS, out, resume=True)
    got, want = (
        load_checkpoint(out / "checkpoint.pt"),
        load_checkpoint(two_epoch_reference / "checkpoint.pt"),
    )
    assert_same_tensors(got["model"], want["model"], "model after a kill and resume")
    assert metrics(out) == metrics(two_epoch_reference)


CLI_RUN = ["--epochs", "2", "--batch-size", "128", "--lr", "3e-3", "--precision", "fp32",
           "--deterministic", "--threads", "1", "--no-progress", "--device", "cpu",
           "--precise-bn", "0", "--profile-batches", "0"]  # fmt: skip


@pytest.mark.slow  # real CLI processes (~13 s); the in-process SIGTERM test above runs always
def test_sigterm_to_a_cli_run_exits_non_zero_and_resumes_to_the_same_result(
    two_epoch_reference: Path, tmp_path: Path
):
    run = tmp_path / "run"
    proc, log = qsnn_start("train", *CLI_RUN, "--out", str(run), cwd=tmp_path, log=tmp_path / "a")
    try:
        assert wait_until(lambda: len(metric_lines(run)) >= 1, proc), log.read_text()
        time.sleep(0.3 * json.loads(metric_lines(run)[0])["epoch_time_s"])
        proc.send_signal(signal.SIGTERM)
    finally:
        rc = _finish(proc)
    text = log.read_text()
    assert rc == 130, f"expected exit 130 after SIGTERM, got {rc}:\n{text}"
    assert "Traceback" not in text and "--resume" in text, text
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1, "the run ended before SIGTERM arrived"
    assert not (run / "result.json").exists() and leftover_temp_files(run) == []

    ref = two_epoch_reference
    train(TWO_EPOCHS, run, resume=True)  # what CLI_RUN spells: checked against the checkpoint
    got, want = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(ref / "checkpoint.pt")
    assert_same_tensors(got["model"], want["model"], "model after SIGTERM and resume")
    assert metrics(run) == metrics(ref)


# -- 5. stale temporary files ------------------------------------------------------------------
KILLED_WRITE = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("qsnn_io", sys.argv[1])
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
def write(handle):
    handle.write(b"half a checkpoint")
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)
io.write_atomic(sys.argv[2], write)
"""


def test_temp_files_of_a_killed_write_are_removed_when_the_run_directory_is_opened(
    tmp_path: Path,
):
    out = tmp_path / "run"
    out.mkdir()
    for target in ("checkpoint.pt", "metrics.jsonl"):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITE, str(IO_SOURCE), str(out / target)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        proc.kill()
        proc.wait(timeout=60)
    stale = leftover_temp_files(out)
    assert len(stale) == 2 and all(name.startswith(".") for name in stale), stale
    # Files that are not write_atomic's temporary files stay, and so do sub-folders' files.
    keep = [out / "notes.tmp", out / ".hidden.tmp", out / ".x.ABCDEFGH.tmp", out / "sub" / stale[0]]
    keep[-1].parent.mkdir()
    for path in keep:
        path.write_text("mine")

    train(TrainConfig(**QUICK), out)
    left = leftover_temp_files(out)
    assert left == sorted(p.name for p in keep[:3]), left
    assert all(p.read_text() == "mine" for p in keep)
    assert (out / "result.json").exists()


def test_write_atomic_temp_names_match_what_is_cleaned(tmp_path: Path):
    from qsnn.io import is_temp_file

    seen = []

    def write(handle):
        seen.extend(p.name for p in tmp_path.iterdir())
        handle.write(b"x")

    write_atomic(tmp_path / "result.json", write)
    assert seen and seen[0].startswith(".result.json.") and is_temp_file(seen[0]), seen
    assert not any(is_temp_file(n) for n in ("result.json", ".lock", "a.tmp", ".a.tmp"))


# -- 6. TrainConfig and config.json ------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": -3}, "epochs"),
        ({"epochs": "3"}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": "1e-3"}, "lr"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_train_config_rejects_bad_values_in_one_line_naming_the_field(values: dict, field: str):
    with pytest.raises(ValueError) as info:
        TrainConfig(**values)
    message = str(info.value)
    assert type(info.value) is ValueError
    assert message.startswith(f"{field} (--{field.replace('_', '-')}) must be"), message
    assert repr(next(iter(values.values()))) in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[1, 2, 3]", "holds an array"),
        ('"small_convnet"', "holds a string"),
        ("", "the file is empty"),
        ('{"model": "small_convnet", "bits": "4/4', "not valid JSON"),
        ('{"epochs": "3"}', "epochs (--epochs) must be an integer"),
        ('{"bits": [4, 4, 1]}', "bits (--bits)"),
        ('{"overrides": "none"}', "overrides (--override)"),
    ],
)
def test_a_bad_config_json_is_one_error_naming_the_file(
    content: str, reason: str, tmp_path: Path, capsys
):
    run = tmp_path / "run"
    if content == "[1, 2, 3]":
        train(TrainConfig(**QUICK), run)
    else:
        run.mkdir()
    path = run / "config.json"
    path.write_text(content)
    with pytest.raises(CheckpointError) as info:
        read_config(path)
    assert str(path) in str(info.value) and reason in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    if content == "[1, 2, 3]":  # a complete run whose config.json is a list
        with pytest.raises(CheckpointError, match=reason):
            load_run(run)
        for argv in (["eval", str(run)], ["train", "--out", str(run), "--resume"]):
            assert cli.main(argv) == 2, argv
            line = one_error_line(capsys.readouterr().err)
            assert str(path) in line, (argv, line)


def test_read_json_object_names_the_file_and_what_it_should_hold(tmp_path: Path):
    path = tmp_path / "result.json"
    for content, reason in [(b"[]", "holds an array"), (b"\xff\xfe", "not UTF-8"),
                            (b"{", "not valid JSON"), (b"null", "holds null")]:  # fmt: skip
        path.write_bytes(content)
        with pytest.raises(CorruptFileError) as info:
            read_json_object(path, "a run's result")
        message = str(info.value)
        assert message.startswith(f"{path} (a run's result)") and reason in message, message
    path.write_text('{"bits": "4/4/1"}')
    assert read_json_object(path) == {"bits": "4/4/1"}
    with pytest.raises(OSError) as info:
        read_json_object(tmp_path / "missing.json")
    assert info.value.filename == str(tmp_path / "missing.json")


# -- 7. data roots are saved absolute ----------------------------------------------------------
def test_a_relative_data_root_is_saved_absolute_and_the_run_loads_from_elsewhere(
    tmp_path: Path, monkeypatch, capsys
):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    _write_cifar10(work / "data", n_per_batch=20)
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    config = TrainConfig(**{**QUICK, "batch_size": 16}, dataset="cifar10", data_root="data")
    result = train(config, "run")
    root = str(work / "data")
    saved = json.loads((work / "run" / "config.json").read_text())
    assert saved["data_root"] == root and result["config"]["data_root"] == root
    ckpt = torch.load(work / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["data_root"] == root

    monkeypatch.chdir(elsewhere)
    _, loaded, data = load_run(work / "run")
    assert loaded.data_root == root
    assert len(data.test) == 20  # the CIFAR test batch, found from another directory
    # A relative root on resume is resolved again and may differ (where the data is read).
    train(TrainConfig(**{**QUICK, "batch_size": 16}, dataset="cifar10", data_root="../work/data"),
          work / "run", resume=True)  # fmt: skip

    # The data moves: eval from the saved root is one error naming it; --data-root reads it
    # from where it is now (deploy and verify take the same flag).
    (work / "data").rename(tmp_path / "moved")
    assert cli.main(["eval", str(work / "run"), "--batches", "1"]) == 2
    assert root in one_error_line(capsys.readouterr().err)
    argv = ["eval", str(work / "run"), "--batches", "1", "--data-root", str(tmp_path / "moved")]
    assert cli.main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_a_checkpoint_that_does_not_fit_its_config_is_one_error(tmp_path: Path):
    """An old checkpoint (no stored model arguments) whose weights are not those of the model
    its config.json describes (here the head's are missing): a CheckpointError naming the
    checkpoint, not a load_state_dict traceback."""
    run = tmp_path / "run"
    train(TrainConfig(**QUICK), run)
    for name in ("best.pt", "checkpoint.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        ckpt.pop("model_args")
        ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("head")}
        torch.save(ckpt, run / name)
    with pytest.raises(CheckpointError, match=r"best\.pt does not fit the model small_convnet"):
        load_run(run)


# -- 8. corrupt run files on --resume ----------------------------------------------------------
def test_a_corrupt_result_json_on_resume_is_replaced_not_trusted(tmp_path: Path, capsys):
    """Training never reads result.json: a garbage one in a finished run is written anew by
    ``--resume`` (nothing of the run is lost: the checkpoint holds it)."""
    run = tmp_path / "run"
    train(TrainConfig(**QUICK), run)
    want = json.loads((run / "result.json").read_text())
    (run / "result.json").write_bytes(b'{"test_acc_best": 0.9')  # truncated
    argv = ["train", "--out", str(run), "--resume", "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    got = json.loads((run / "result.json").read_text())
    assert {k: got[k] for k in ("test_acc_best", "bits", "best_epoch")} == {
        k: want[k] for k in ("test_acc_best", "bits", "best_epoch")
    }


@pytest.mark.parametrize("content", ['{"model": "small_conv', "\x00\x01garbage", "[]"])
def test_a_corrupt_config_json_on_resume_names_the_file(content: str, tmp_path: Path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(**QUICK), run)
    (run / "config.json").write_text(content)
    before = files(run)
    assert cli.main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(run / "config.json") in line, line
    assert files(run) == before


@pytest.mark.slow  # two real CLI processes (~9 s); the lock itself is tested in process above
def test_qsnn_train_reports_a_subprocess_lock_conflict_in_one_line(tmp_path: Path):
    """The real command, in its own process, while another process holds the run directory."""
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        done = subprocess.run(
            [*QSNN, "train", "--out", str(out), "--epochs", "1", "--no-progress", "--threads", "1"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        release(holder)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"run directory {out} is in use by another process (pid {holder.pid})" in line, line


# -- 9. T has a bound: a training step that cannot fit is refused before it runs -------------
def test_training_at_a_T_that_cannot_fit_is_refused_before_the_first_step(tmp_path: Path):
    """At T = 100000 the activations of one digits batch need far more than any machine here
    has: one MemoryLimitError (a ValueError) naming T and the batch, within seconds, and no
    checkpoint written."""
    from qsnn._memory import MemoryLimitError, available_bytes

    free = available_bytes("cpu")
    if free is not None and free > 2**40:
        pytest.skip(f"{free / 2**30:.0f} GiB available: T = 100000 might fit")
    config = TrainConfig(**{**QUICK, "bits": "4/4/100000"})
    start = time.monotonic()
    with pytest.raises(MemoryLimitError, match=r"training at T=100000, batch 128 needs about"):
        train(config, tmp_path / "run")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
