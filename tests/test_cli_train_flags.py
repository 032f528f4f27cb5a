"""``qsnn train``/``qsnn sweep`` flags derived from ``TrainConfig`` (issue 14, item 5), the
config file option, ``TrainConfig``'s type checks, and which errors the CLI turns into one line.

Everything runs in process and loads no data, except one test that reads the embedded digits.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from qsnn import cli
from qsnn.allocation import Bits
from qsnn.train import TrainConfig, load_data
from qsnn.train import engine as engine_module
from test_train import one_error_line

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
#: Fields whose flag is not ``--`` + name with ``-`` for ``_`` (their values are KEY=VALUE lists).
MAPPING_FLAGS = {"overrides": "--override", "data_options": "--data-option",
                 "model_options": "--model-option"}  # fmt: skip


def parse(*argv: str, command: str = "train") -> TrainConfig:
    return cli._train_config(cli.build_parser().parse_args([command, *argv]))


def help_entries(command: str, capsys, monkeypatch) -> dict[str, str]:
    """``qsnn COMMAND --help`` as {option string: its help text, whitespace collapsed}."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    entries: dict[str, list[str]] = {}
    current: list[str] = []
    for line in capsys.readouterr().out.splitlines():
        if re.match(r"^  -", line):  # "  --epochs N   training epochs (default: 10)"
            current = [line]
            for flag in re.findall(r"(--[a-z][a-z-]*)", line.split("  ")[1]):
                entries[flag] = current
        elif line.startswith("   ") and current:
            current.append(line)
        else:
            current = []
    return {flag: " ".join(" ".join(lines).split()) for flag, lines in entries.items()}


# -- --help: one flag per field, with its default ------------------------------------------------
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_lists_every_field_with_its_default(command, capsys, monkeypatch) -> None:
    entries = help_entries(command, capsys, monkeypatch)
    for f in dataclasses.fields(TrainConfig):
        flag = MAPPING_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in entries, f"{f.name}: no {flag} in `qsnn {command} --help`"
        text = entries[flag]
        if isinstance(f.default, bool):
            assert f"--no-{f.name.replace('_', '-')}" in entries, f.name
            assert f"(default: {str(f.default).lower()})" in text, (f.name, text)
        elif f.default is None:
            assert re.search(r"\(default: [^)]+\)", text), (f.name, text)
        else:
            assert f"(default: {f.default})" in text, (f.name, text)
        assert len(text) > len(flag) + 30, (f.name, text)  # a help text, not only the flag
    # The defaults a user reads, written out by hand (SPEC §8: AdamW lr 5e-4, batch 128, ...).
    for flag, shown in [("--epochs", "10"), ("--batch-size", "128"), ("--lr", "0.0005"),
                        ("--bits", "4/4/1"), ("--precise-bn", "4096"), ("--precision", "auto"),
                        ("--model", "small_convnet"), ("--dataset", "digits"),
                        ("--no-augment", "true"), ("--compile", "false")]:  # fmt: skip
        assert f"(default: {shown})" in entries[flag], (flag, entries[flag])


# -- every flag that existed keeps its spelling and value ----------------------------------------
EXISTING_FLAGS = [
    (["--model", "resnet19_cifar"], {"model": "resnet19_cifar"}),
    (["--dataset", "cifar10"], {"dataset": "cifar10"}),
    (["--bits", "2/2/2"], {"bits": "2/2/2"}),
    (["--override", "stem.*=8", "--override", "head=8/8"],
     {"overrides": {"stem.*": 8, "head": "8/8"}}),
    (["--neuron", "theta=0.5", "--neuron", "reset=soft", "--model-option",
      "widths=[8,16,16,16,16]"],
     {"model_options": {"widths": [8, 16, 16, 16, 16], "neuron": {"theta": 0.5, "reset": "soft"}}}),
    (["--data-root", "/some/where"], {"data_root": "/some/where"}),
    (["--download"], {"data_options": {"download": True}}),
    (["--epochs", "3"], {"epochs": 3}),
    (["--batch-size", "32"], {"batch_size": 32}),
    (["--lr", "3e-3"], {"lr": 0.003}),
    (["--weight-decay", "0.01"], {"weight_decay": 0.01}),
    (["--warmup-epochs", "0.5"], {"warmup_epochs": 0.5}),
    (["--label-smoothing", "0.2"], {"label_smoothing": 0.2}),
    (["--mixup", "0.8"], {"mixup": 0.8}),
    (["--cutmix", "1"], {"cutmix": 1.0}),
    (["--no-augment"], {"augment": False}),
    (["--val-size", "0"], {"val_size": 0}),
    (["--precise-bn", "0"], {"precise_bn": 0}),
    (["--seed", "7"], {"seed": 7}),
    (["--precision", "fp32"], {"precision": "fp32"}),
    (["--no-channels-last"], {"channels_last": False}),
    (["--compile"], {"compile": True}),
    (["--device", "cpu"], {"device": "cpu"}),
    (["--threads", "1"], {"threads": 1}),
    (["--deterministic"], {"deterministic": True}),
    (["--no-progress"], {"progress": False}),
    # new: the fields that had no flag
    (["--min-lr-ratio", "0.1"], {"min_lr_ratio": 0.1}),
    (["--profile-batches", "0"], {"profile_batches": 0}),
    (["--time-steps-data", "6"], {"time_steps_data": 6}),
    (["--data-option", "size=16", "--data-option", "seed=3"],
     {"data_options": {"size": 16, "seed": 3}}),
    (["--no-compile", "--augment", "--progress"],
     {"compile": False, "augment": True, "progress": True}),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "expected"), EXISTING_FLAGS, ids=[" ".join(f) for f, _ in
                                                                   EXISTING_FLAGS])
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_each_flag_sets_its_field_and_nothing_else(command, flags, expected) -> None:
    config = parse(*flags, command=command)
    defaults = TrainConfig()
    for name in FIELDS:
        want = expected.get(name, getattr(defaults, name))
        got = getattr(config, name)
        assert got == want and type(got) is type(want), (name, got, want)


def test_no_flags_is_the_default_config() -> None:
    assert parse() == TrainConfig()
    assert parse(command="sweep") == TrainConfig()


# -- error messages name flags that exist ----------------------------------------------------------
def test_every_flag_named_by_a_config_error_exists() -> None:
    """Issue 14: messages said --min-lr-ratio and --profile-batches, which did not exist."""
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # the `train` subparser
    known = {s for action in train._actions for s in action.option_strings}
    bad = {name: object() for name in FIELDS}  # a wrong type for every field
    bad.update(min_lr_ratio=2.0, profile_batches=-1, time_steps_data=0, epochs=0)
    for name in FIELDS:
        with pytest.raises(ValueError) as info:
            TrainConfig(**{name: bad[name]})
        message = str(info.value)
        assert message.startswith(f"{name} ("), message  # names the field ...
        flags = re.findall(r"--[a-z][a-z-]*[a-z]", message)
        assert flags and set(flags) <= known, (name, message)  # ... and flags that parse


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--min-lr-ratio", "2"], ["--min-lr-ratio", "[0, 1]", "2.0"]),
        (["--profile-batches", "-1"], ["--profile-batches", "-1"]),
        (["--time-steps-data", "0"], ["--time-steps-data", "0"]),
        (["--lr", "nan"], ["--lr", "finite", "nan"]),
        (["--data-option", "time_steps=4"], ["--data-option", "time_steps", "--time-steps-data"]),
        (["--data-option", "size"], ["--data-option", "KEY=VALUE"]),
        (["--data-option", "download=true", "--download"], ["--download", "not both"]),
        (["--override", "stem.*=8", "--override", "stem.*=4"], ["--override", "twice"]),
    ],
)
def test_bad_new_flags_are_one_error_line(flags, needles, capsys) -> None:
    assert cli.main(["train", *flags]) == 2
    line = one_error_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, (needle, line)


def test_data_options_and_time_steps_data_reach_the_data_layer(monkeypatch) -> None:
    # digits upsampled by its `size` option: 16x16 instead of the native 8x8
    data = load_data(parse("--data-option", "size=16", "--val-size", "0"))
    assert data.train.sample_shape == (1, 16, 16) and data.test.sample_shape == (1, 16, 16)
    # an event dataset gets --time-steps-data frames, not the allocation's T (no files needed)
    seen = {}

    def fake_load_splits(name, root, **kw):
        seen.update(kw, name=name, root=root)
        raise LookupError("stop here")

    monkeypatch.setattr(engine_module, "load_splits", fake_load_splits)
    config = parse("--dataset", "nmnist", "--bits", "4/2/2", "--time-steps-data", "6",
                   "--data-option", "cache=false", "--data-root", "/nowhere")  # fmt: skip
    with pytest.raises(LookupError):
        load_data(config)
    assert seen == {"name": "nmnist", "root": "/nowhere", "time_steps": 6, "cache": False}
    with pytest.raises(LookupError):
        load_data(parse("--dataset", "nmnist", "--bits", "4/2/2"))
    assert seen["time_steps"] == 2


# -- TrainConfig: Bits, types, old configs ---------------------------------------------------------
def test_bits_object_is_saved_as_its_string_and_loads_back() -> None:
    """Issue 14: TrainConfig(bits=Bits(...)) was saved as {"w": 4, ...} and failed to load."""
    config = TrainConfig(bits=Bits(4, 2, 2), overrides={"head": Bits(8, 8, 2), "stem.*": 8})
    assert config.bits == "4/2/2" and config.allocation == Bits(4, 2, 2)
    assert config.overrides == {"head": "8/8/2", "stem.*": 8}
    saved = json.loads(json.dumps(config.to_dict()))  # what config.json holds
    assert saved["bits"] == "4/2/2" and saved["overrides"]["head"] == "8/8/2"
    assert TrainConfig.from_dict(saved) == config
    assert TrainConfig(bits=Bits(4, 2, 2)) == TrainConfig(bits="4/2/2")


def test_configs_saved_with_the_bits_bug_and_before_precise_bn_still_load() -> None:
    broken = {**TrainConfig().to_dict(), "bits": {"w": 4, "s": 2, "t": 2},
              "overrides": {"head": {"w": 8, "s": 8, "t": 2}, "stem.*": {"w": 8}}}  # fmt: skip
    config = TrainConfig.from_dict(broken)
    assert config.bits == "4/2/2"
    assert config.overrides == {"head": "8/8/2", "stem.*": {"w": 8}}  # a w/s mapping stays
    old = TrainConfig.from_dict({"bits": "1/4/1", "epochs": 3, "gone_field": 1})
    assert old.precise_bn == 0 and old.epochs == 3
    assert old.model_options == {"neuron": {"level_scale": "fixed", "learn_theta": False,
                                            "pow2_theta": False}}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("epochs", "10", "an integer"),
        ("epochs", 2.0, "an integer"),
        ("epochs", True, "an integer"),
        ("batch_size", None, "an integer"),
        ("val_size", "100", "an integer"),
        ("lr", "1e-3", "a number"),
        ("lr", False, "a number"),
        ("augment", "yes", "true or false"),
        ("augment", 1, "true or false"),
        ("bits", 4, "a 'b_w/b_s/T' string or a Bits"),
        ("model", None, "a string"),
        ("data_root", 3, "a path"),
        ("overrides", [("stem.*", 8)], "a mapping with string keys"),
        ("model_options", {1: 2}, "a mapping with string keys"),
        ("data_options", "size=16", "a mapping with string keys"),
    ],
)
def test_wrong_types_are_one_value_error_naming_field_type_and_value(field, value, want) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field} ("), message
    assert f"must be {want}; got {value!r} ({type(value).__name__})" in message, message


def test_types_are_normalised() -> None:
    config = TrainConfig(epochs=np.int64(3), lr=1, mixup=np.float32(0.5), data_root=Path("/d"))
    assert config.epochs == 3 and type(config.epochs) is int
    assert config.lr == 1.0 and type(config.lr) is float
    assert config.mixup == 0.5 and type(config.mixup) is float
    assert config.data_root == "/d"
    json.dumps(config.to_dict())  # all plain JSON values
    with pytest.raises(ValueError, match=r"model_options \(--neuron/--model-option\) must be JSON"):
        TrainConfig(model_options={"widths": object()})
    with pytest.raises(ValueError, match=r"cannot set 'root'; set data_root \(--data-root\)"):
        TrainConfig(data_options={"root": "/x"})


# -- --config FILE -------------------------------------------------------------------------------
def test_config_file_values_are_overridden_by_flags(tmp_path: Path) -> None:
    file = tmp_path / "run.json"
    file.write_text(json.dumps({
        "epochs": 2, "lr": 0.002, "bits": "2/2/2", "augment": False,
        "overrides": {"stem.*": 8, "head": 8},
        "model_options": {"widths": [8, 16, 16, 16, 16], "neuron": {"theta": 0.5}},
    }))  # fmt: skip
    config = parse("--config", str(file))
    assert (config.epochs, config.lr, config.bits, config.augment) == (2, 0.002, "2/2/2", False)
    assert config.batch_size == 128  # neither in the file nor on the line: the default
    config = parse("--config", str(file), "--lr", "0.01", "--augment", "--override", "head=4",
                   "--neuron", "tau=2")  # fmt: skip
    assert (config.epochs, config.lr, config.augment) == (2, 0.01, True)
    assert config.overrides == {"stem.*": 8, "head": 4}  # key by key
    assert config.model_options == {"widths": [8, 16, 16, 16, 16],
                                    "neuron": {"theta": 0.5, "tau": 2.0}}  # fmt: skip


def test_a_run_config_json_is_a_config_file(tmp_path: Path) -> None:
    saved = TrainConfig(bits="1/4/1", epochs=3, precise_bn=0, val_size=0)
    file = tmp_path / "config.json"
    file.write_text(json.dumps(saved.to_dict()))
    assert parse("--config", str(file)) == saved
    assert parse("--config", str(file), "--seed", "5") == dataclasses.replace(saved, seed=5)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('{"epoch": 3}', ["unknown field 'epoch'", "did you mean epochs"]),
        ('{"epochs": 2, "epochs": 3}', ["'epochs' is given twice"]),
        ('{"epochs": "2"}', ["epochs (--epochs) must be an integer; got '2' (str)"]),
        ('{"lr": NaN}', ["not valid JSON", "NaN"]),
        ('{"lr": 0.1', ["not valid JSON"]),
        ("[1, 2]", ["must hold an object", "list"]),
    ],
)
def test_bad_config_file_is_one_error_line_naming_it(text, needles, tmp_path, capsys) -> None:
    file = tmp_path / "run.json"
    file.write_text(text)
    assert cli.main(["train", "--config", str(file), "--out", str(tmp_path / "x")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--config {file}" in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "x").exists()


def test_missing_config_file_and_yaml(tmp_path: Path, capsys) -> None:
    assert cli.main(["train", "--config", str(tmp_path / "none.json")]) == 2
    assert "No such file" in one_error_line(capsys.readouterr().err)
    file = tmp_path / "run.yaml"
    file.write_text("epochs: 2\nlr: 0.002\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert cli.main(["train", "--config", str(file)]) == 2
        assert "pip install pyyaml" in one_error_line(capsys.readouterr().err)
    else:
        config = parse("--config", str(file))
        assert (config.epochs, config.lr) == (2, 0.002)


def test_resume_compares_config_file_values_with_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(bits="2/2/2", epochs=1)
    (run / "config.json").write_text(json.dumps(saved.to_dict()))
    parser = cli.build_parser()
    same = parser.parse_args(["train", "--resume", "--config", str(run / "config.json"),
                              "--threads", "1"])  # fmt: skip
    assert cli._resume_config(same, str(run)) == dataclasses.replace(saved, threads=1)
    other = tmp_path / "other.json"
    other.write_text('{"bits": "4/4/1", "min_lr_ratio": 0.5}')
    args = parser.parse_args(["train", "--resume", "--config", str(other)])
    with pytest.raises(ValueError, match=r"--bits '4/4/1' \(run: '2/2/2'\).*--min-lr-ratio 0\.5"):
        cli._resume_config(args, str(run))


# -- which errors are one line -------------------------------------------------------------------
def test_bad_input_is_one_line_and_debug_shows_the_traceback(capsys) -> None:
    assert cli.main(["bits", "9/1/1"]) == 2
    assert "Bits.w" in one_error_line(capsys.readouterr().err)
    for argv in (["--debug", "bits", "9/1/1"], ["bits", "9/1/1", "--debug"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "check_weight_bits" in err, err
        assert err.strip().splitlines()[-1].startswith("qsnn: error: Bits.w"), err


def test_a_value_error_from_inside_another_library_keeps_its_traceback(monkeypatch) -> None:
    """A bug (qsnn calling numpy wrongly) is not reported as the user's bad input."""

    def buggy(*args, **kwargs):
        return np.broadcast_to(np.zeros(3), (2,))  # ValueError raised inside numpy

    monkeypatch.setattr(cli, "allocations", buggy)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["allocations", "--budget", "4"])


def test_other_internal_errors_keep_their_traceback(monkeypatch) -> None:
    def buggy(*args, **kwargs):
        return {}["missing"]

    monkeypatch.setattr(cli, "allocations", buggy)
    with pytest.raises(KeyError):
        cli.main(["allocations", "--budget", "4"])


def test_a_file_that_cannot_be_opened_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    missing = tmp_path / "no" / "such.json"
    monkeypatch.setattr(cli, "allocations", lambda *a, **k: missing.read_text())
    assert cli.main(["allocations", "--budget", "4"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(missing) in line and "No such file" in line, line
