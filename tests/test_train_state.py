"""``fit`` leaves process-wide settings as it found them; the run state is a typed object;
checkpoints carry the model's construction arguments so ``load_run`` needs no data."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from qsnn.train import (
    NonFiniteLossError,
    TrainConfig,
    build_model,
    fit,
    load_checkpoint,
    load_data,
    load_run,
    save_checkpoint,
    train,
)
from qsnn.train import engine as engine_module
from qsnn.train.state import BestEpoch, EpochProgress, RunState

# One epoch of digits (8x8) on small_convnet: a few seconds on two cores.
QUICK = dict(
    epochs=1, batch_size=64, lr=3e-3, bits="4/4/1", precision="fp32", progress=False,
    profile_batches=0, device="cpu", val_size=200,
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _eager_kernels():
    """Neuron kernels run eagerly, as in tests/test_train.py (no compile time)."""
    import torch._dynamo.config

    # config.patch, not monkeypatch: monkeypatch's undo deletes a config module's attribute
    # (it is not in the module's __dict__), which broke dynamo for every later test.
    with torch._dynamo.config.patch(disable=True):
        yield


def _settings() -> tuple:
    return (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )


def _rng_fingerprint() -> tuple:
    """The next draw of every RNG, without consuming the states."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    draws = (float(torch.rand(())), float(np.random.rand()), random.random())
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])
    return draws


def _other_settings_config(**kw: object) -> TrainConfig:
    """A config whose threads and deterministic mode differ from this process's."""
    threads = 1 if torch.get_num_threads() != 1 else 2
    assert not torch.are_deterministic_algorithms_enabled()
    return TrainConfig(**{**QUICK, "threads": threads, "deterministic": True, **kw})


class _NaNAfterFirstStep(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > 1:
                out = out * float("nan")
        return out


def test_fit_restores_threads_deterministic_mode_and_rngs(tmp_path: Path) -> None:
    config = _other_settings_config()
    data = load_data(config)
    model = build_model(config, data.train)
    before, rng = _settings(), _rng_fingerprint()
    seen = {}

    def spy(*args: object, **kwargs: object) -> dict:
        seen["threads"] = torch.get_num_threads()
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        return finish(*args, **kwargs)

    finish = engine_module.finish
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "finish", spy)
        result = fit(model, data, config, out_dir=tmp_path / "run")
    # the run trained with its own settings ...
    assert seen == {"threads": config.threads, "deterministic": True}
    assert result["environment"]["threads"] == config.threads
    # ... and the process got its own back
    assert _settings() == before
    assert _rng_fingerprint() == rng


@pytest.mark.parametrize("failure", ["batch_too_large", "nan_loss"])
def test_fit_restores_settings_when_it_raises(failure: str, tmp_path: Path) -> None:
    config = _other_settings_config()
    data = load_data(config)
    model = build_model(config, data.train)
    if failure == "batch_too_large":
        config = _other_settings_config(batch_size=10_000)
        error: type[Exception] = ValueError
    else:
        model, error = _NaNAfterFirstStep(model), NonFiniteLossError
    before, rng = _settings(), _rng_fingerprint()
    with pytest.raises(error):
        fit(model, data, config, out_dir=tmp_path / "run")
    assert _settings() == before
    assert _rng_fingerprint() == rng


def test_run_state_round_trips_through_a_checkpoint() -> None:
    state = RunState(epoch=2, step=5, history=[{"epoch": 1}, {"epoch": 2}],
                     best=BestEpoch(1, 0.5, 0.4), partial=EpochProgress(3.0, 2.0, 4.0, 1.5),
                     train_time=7.0)  # fmt: skip
    saved = state.to_checkpoint()
    assert saved == {
        "epoch": 2, "step": 5, "history": [{"epoch": 1}, {"epoch": 2}],
        "best": {"epoch": 1, "val_acc": 0.5, "test_acc": 0.4},
        "partial": {"loss": 3.0, "correct": 2.0, "count": 4.0, "time": 1.5},
        "train_time": 7.0,
    }  # fmt: skip
    assert RunState.from_checkpoint({"model": {}, **saved}) == state
    # a checkpoint from before train_time existed: the default stays
    old = {k: v for k, v in saved.items() if k != "train_time"}
    assert RunState.from_checkpoint(old).train_time == 0.0


def test_finish_epoch_chooses_on_validation_first_of_equals() -> None:
    state = RunState()
    assert state.finish_epoch({"epoch": 1, "val_acc": 0.5, "test_acc": 0.1})
    assert not state.finish_epoch({"epoch": 2, "val_acc": 0.5, "test_acc": 0.9})
    assert state.finish_epoch({"epoch": 3, "val_acc": 0.6, "test_acc": 0.2})
    assert state.best == BestEpoch(3, 0.6, 0.2) and (state.epoch, state.step) == (3, 0)
    no_val = RunState()
    no_val.finish_epoch({"epoch": 1, "test_acc": 0.3})
    no_val.finish_epoch({"epoch": 2, "test_acc": 0.1})
    assert no_val.best == BestEpoch(2, -1.0, 0.1)  # the last epoch


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("quick") / "run"
    train(TrainConfig(**QUICK, threads=1), run)
    return run


def test_checkpoints_store_the_model_arguments(quick_run: Path) -> None:
    for name in ("checkpoint.pt", "best.pt"):
        ckpt = torch.load(quick_run / name, weights_only=True)
        # The neuron settings are explicit (version 2 of the defaults: the scaled step), so
        # the checkpoint rebuilds the same neurons after the defaults change again.
        assert ckpt["model_args"] == {
            "name": "small_convnet", "bits": "4/4/1", "overrides": None,
            "num_classes": 10, "in_channels": 1, "img_size": (8, 8),
            "neuron": {"level_scale": "scaled", "theta": 1.0, "learn_theta": False,
                       "pow2_theta": True},
        }  # fmt: skip


def test_load_run_builds_the_model_without_loading_data(quick_run: Path) -> None:
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_run loaded the dataset to build the model")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "load_splits", no_data)
        model, config, data = load_run(quick_run)
        assert not data.loaded and "not loaded" in repr(data)
    weights = load_checkpoint(quick_run / "best.pt")["model"]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert not model.training and config.model == "small_convnet"
    # the splits load on first use, with the run's validation hold-out
    assert len(data.val) == 200 and len(data.test) > 0 and data.loaded


def test_old_checkpoint_without_model_arguments_still_loads(
    quick_run: Path, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "old"
    shutil.copytree(quick_run, run)
    for name in ("checkpoint.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        del ckpt["model_args"]
        save_checkpoint(run / name, ckpt)
    calls = []
    real = engine_module.load_data

    def counting(config: TrainConfig) -> object:
        calls.append(config.dataset)
        return real(config)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "load_data", counting)
        model, _, data = load_run(run, which="last")
        assert calls == ["digits"] and data.loaded  # sized from the training split, as before
    want = load_checkpoint(run / "checkpoint.pt")["model"]
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())


def test_a_change_of_the_neuron_defaults_keeps_runs_saved_before_apart() -> None:
    """A run saved before ``neuron_defaults`` existed keeps its settings key (computed here by
    the key's formula, independently) and is rebuilt with version 1's neurons (fixed θ = 1); a
    new run (version 2: the scaled step) gets another key and its own neurons, so a sweep
    never takes one for the other."""
    import hashlib
    import json

    from qsnn.train import config as cfg
    from qsnn.train.config import RESUMABLE_FIELDS, settings_key

    saved = TrainConfig(model="small_convnet", dataset="digits", bits="1/4/1").to_dict()
    del saved["neuron_defaults"]  # as a config.json written before the field
    shaping = {k: v for k, v in saved.items() if k not in RESUMABLE_FIELDS}
    old_key = hashlib.sha256(
        json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()[:12]
    old = TrainConfig.from_dict(saved)
    assert old.neuron_defaults == 1 and settings_key(old) == old_key
    assert old.neuron_options() == {
        "level_scale": "fixed", "theta": 1.0, "learn_theta": False, "pow2_theta": True,
    }  # fmt: skip
    args = old.with_neuron_defaults({"name": "small_convnet"})
    assert args["neuron"] == cfg.NEURON_DEFAULTS[1]
    new = TrainConfig(model="small_convnet", dataset="digits", bits="1/4/1")
    assert new.neuron_defaults == 2 and settings_key(new) != old_key
    assert new.neuron_options() == {
        "level_scale": "scaled", "theta": 1.0, "learn_theta": False, "pow2_theta": True,
    }  # fmt: skip
    # Version 1 asked for explicitly is the old run again (same neurons, same key).
    assert settings_key(replace(new, neuron_defaults=1)) == old_key
    # A setting the run gave itself wins over its version's default.
    own = replace(new, model_options={"neuron": {"level_scale": "data"}})
    assert own.neuron_options()["level_scale"] == "data"
    with pytest.raises(ValueError, match="neuron_defaults"):
        TrainConfig(model="small_convnet", dataset="digits", neuron_defaults=7)


def test_model_defaults_match_the_current_version_of_the_neuron_defaults() -> None:
    """``MODEL_NEURON_DEFAULTS`` (what ``create_model`` gives neurons left unset) and
    ``NEURON_DEFAULTS[NEURON_DEFAULTS_VERSION]`` (what a new run records) must describe the same
    neurons; changing one without the other would train runs with settings they do not record."""
    from qsnn.models.layers import LayerFactory
    from qsnn.train.config import NEURON_DEFAULTS, NEURON_DEFAULTS_VERSION

    plain = LayerFactory.for_model("1/4/1").neuron_module().level
    recorded = LayerFactory.for_model(
        "1/4/1", neuron=NEURON_DEFAULTS[NEURON_DEFAULTS_VERSION]
    ).neuron_module().level
    for attr in ("rule", "theta0", "learn", "pow2"):
        assert getattr(plain, attr) == getattr(recorded, attr), attr
