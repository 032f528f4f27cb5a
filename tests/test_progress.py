"""Progress of the long commands (issue 18, item 3): ``qsnn._progress`` and its use by ``eval``,
``verify``, ``profile``, ``deploy`` and ``hw``.

Off a terminal a command writes one line per stage and, every few seconds of a loop, k of N
with the time elapsed and left; on a terminal a tqdm bar; with ``--no-progress`` nothing. All
of it goes to stderr: stdout is byte-identical with and without. One tiny run is trained on
the embedded digits for the commands that read a run.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import qsnn._progress as progress_module
from qsnn._progress import Progress, eta
from qsnn.cli import main
from qsnn.train import TrainConfig, train


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Notes(logging.Handler):
    """The messages logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A finished tiny small_convnet run on digits at 2/2/2 (one epoch, narrow layers), with
    ``--compile`` (dynamo disabled: wrapped, not compiled) and what its training loop logged."""
    import torch
    import torch._dynamo.config

    out = tmp_path_factory.mktemp("progress") / "run"
    threads = torch.get_num_threads()
    notes, logger = Notes(), logging.getLogger("qsnn.train.loop")
    logger.addHandler(notes)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with torch._dynamo.config.patch(disable=True):  # no kernel compilation in a tiny run
            train(TrainConfig(
                bits="2/2/2", epochs=1, batch_size=128, lr=5e-3, precision="fp32",
                channels_last=False, progress=False, profile_batches=0, precise_bn=0,
                val_size=0, threads=1, compile=True, model_options={"widths": (8, 8, 8, 8, 8)},
            ), out)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
        logger.removeHandler(notes)
        logger.setLevel(level)
    return out, notes.messages


@pytest.fixture(scope="module")
def run(trained: tuple[Path, list[str]]) -> Path:
    return trained[0]


def test_training_says_once_that_compile_makes_the_first_steps_slow(trained) -> None:
    """``--compile``: one note before the first steps (kernels compile there)."""
    notes = [m for m in trained[1] if "compiling the model (--compile)" in m]
    assert len(notes) == 1 and "the first steps" in notes[0]


# -- the helper -------------------------------------------------------------------------------
def test_eta_and_durations() -> None:
    assert eta(30, 1, 4) == "30 s elapsed, about 2 min left"  # 30 s per item, 3 left: 90 s
    assert eta(720, 2, 6) == "12 min elapsed, about 24 min left"
    assert eta(100, 3, 3) == "2 min elapsed"  # all done: nothing left to estimate
    assert eta(5, 0, 3) == "5 s elapsed"  # nothing done yet: no estimate
    assert eta(5, 2, None) == "5 s elapsed"  # unknown total


def test_off_a_terminal_a_line_per_stage_and_every_interval() -> None:
    """Stage lines at once; a loop's lines only once ``every`` seconds have passed since the
    last, each with k of N, the time elapsed and the estimated time left."""
    clock, stream = FakeClock(), io.StringIO()
    report = Progress("eval", stream=stream, every=10, clock=clock)
    assert not report.terminal
    report.stage("test accuracy on 400 samples")
    with report.counter(4, "batches", "evaluated") as count:
        clock.now += 4
        count.advance()  # 4 s: too soon for a line
        clock.now += 8
        count.advance(detail="loss 0.5")  # 12 s: a line
        clock.now += 3
        count.advance()  # 3 s after the last line: none
        clock.now += 10
        count.advance(detail=lambda: "done")
    assert stream.getvalue().splitlines() == [
        "eval: test accuracy on 400 samples",
        "eval: evaluated 2 of 4 batches, loss 0.5, 12 s elapsed, about 12 s left",
        "eval: evaluated 4 of 4 batches, done, 25 s elapsed",
    ]
    stream = io.StringIO()
    items = list(Progress("hw", stream=stream, every=0, clock=clock).track("abc", 3, "layers"))
    assert items == ["a", "b", "c"]
    assert stream.getvalue().splitlines()[0] == "hw: 1 of 3 layers, 0 s elapsed, about 0 s left"


def test_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    report = Progress("verify", enabled=False, stream=stream, every=0, terminal=True)
    report.stage("loading")
    assert list(report.track(range(3), 3, "samples")) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar() -> None:
    """stderr a tty: a loop is a tqdm bar (its description, count and rate), a stage line is
    written above it, and there are no periodic lines."""
    pytest.importorskip("tqdm")
    stream = Terminal()
    report = Progress("verify", stream=stream, every=0)
    assert report.terminal
    with report.counter(64, "samples", "compared") as count:
        report.stage("a stage line while the bar is open")
        for _ in range(4):
            count.advance(16, "agree 100%")
    text = stream.getvalue()
    assert "verify: compared" in text and "64/64" in text and "samples/s" in text
    assert "\r" in text  # redrawn in place, as a bar
    assert "verify: a stage line while the bar is open\n" in text
    assert "elapsed, about" not in text


# -- the commands -----------------------------------------------------------------------------
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(argv) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_eval_progress_on_stderr_and_stdout_unchanged(run, capsys, monkeypatch) -> None:
    """Every loop line written (interval 0): stage lines and k of N with the time left go to
    stderr; stdout is byte for byte what ``--no-progress`` prints, and that writes no line."""
    monkeypatch.setattr(progress_module, "EVERY", 0.0)
    out, err = _cli(["eval", str(run), "--batches", "1"], capsys)
    lines = err.splitlines()
    assert "eval: test accuracy on 359 samples" in lines
    assert any(line.startswith("eval: evaluated 1 of 2 batches, ") and line.endswith(" left")
               for line in lines), err  # fmt: skip
    assert "eval: firing rates on 1 data batches" in lines
    quiet_out, quiet_err = _cli(["eval", str(run), "--batches", "1", "--no-progress"], capsys)
    assert quiet_err == ""
    assert quiet_out == out and "test accuracy" in out


def test_profile_progress_and_stdout_unchanged(capsys) -> None:
    argv = ["profile", "--model", "small_convnet", "--bits", "2/2/2", "--input-size", "1x8x8"]
    out, err = _cli(argv, capsys)
    assert err.splitlines() == ["profile: tracing the ops of SmallConvNet on the example input"]
    quiet_out, quiet_err = _cli([*argv, "--no-progress"], capsys)
    assert quiet_err == "" and quiet_out == out and "S-ACE" in out


def test_deploy_then_verify_progress(run, tmp_path, capsys, monkeypatch) -> None:
    """deploy: a line for the conversion; verify of the stored program: its stage line and the
    samples compared with the agreement so far and the time left. stdout as with
    --no-progress."""
    monkeypatch.setattr(progress_module, "EVERY", 0.0)
    out_dir = tmp_path / "deploy"
    out, err = _cli(["deploy", str(run), "--out", str(out_dir)], capsys)
    (line,) = err.splitlines()  # the conversion; loading and writing take no time
    assert line.startswith("deploy: converting SmallConvNet into an integer program (")
    argv = ["verify", str(run), "--program", str(out_dir), "--limit", "64", "--batch-size", "32"]
    out, err = _cli(argv, capsys)
    lines = err.splitlines()
    assert (
        lines[0]
        == "verify: 64 samples through the float model and, bit-serially, the integer program"
    )
    assert lines[-2].startswith("verify: compared 32 of 64 samples, ")
    assert "% agree so far, " in lines[-2]
    assert lines[-2].endswith(" left")
    assert lines[-1].startswith("verify: compared 64 of 64 samples")
    quiet_out, quiet_err = _cli([*argv, "--no-progress"], capsys)
    assert quiet_err == "" and quiet_out == out and "predictions agree" in out


def test_verify_on_a_terminal_draws_a_bar(run, capsys, monkeypatch) -> None:
    """stderr a tty (isatty patched): the samples compared are a tqdm bar, not lines."""
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _, err = _cli(["verify", str(run), "--limit", "64", "--batch-size", "32", "--dense"], capsys)
    assert "verify: converting SmallConvNet into an integer program (" in err
    assert "verify: compared" in err and "64/64" in err and "\r" in err
    assert "elapsed, about" not in err


def test_no_progress_leaves_stderr_empty_in_a_real_process(capsys) -> None:
    """The console entry point with --no-progress: no progress and no log lines (data
    loading, kernel notes) on stderr; the same stdout as a run with its stage lines."""
    argv = ["hw", "--model", "small_convnet", "--bits", "2/2/2,4/2/2", "--input-size", "1x8x8"]
    quiet = subprocess.run([sys.executable, "-m", "qsnn", *argv, "--no-progress"],
                           capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert quiet.stderr == ""
    out, err = _cli(argv, capsys)
    assert err.splitlines() == [
        "hw: tracing the layers of small_convnet at 2/2/2",
        "hw: tracing the layers of small_convnet at 4/2/2",
    ]
    assert quiet.stdout == out and "cycles" in out
