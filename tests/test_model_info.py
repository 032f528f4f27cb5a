"""Model metadata in the registry (``qsnn.models.model_info``) and the raw-input-bits rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qsnn.data import DataError, raw_input_bits
from qsnn.models import ModelInfo, _registry, create_model, list_models, model_info, register_model


def test_raw_input_bits_per_data_kind() -> None:
    assert raw_input_bits("static") == 8
    assert raw_input_bits("events") is None
    with pytest.raises(DataError, match="static"):
        raw_input_bits("video")


@pytest.mark.parametrize("name", list_models())
def test_model_info_matches_the_built_model(name: str) -> None:
    info = model_info(name)
    with torch.device("meta"):  # no memory, no init cost: only the constructor's shapes
        model = create_model(name, bits="4/2/2")
    assert info.name == name
    assert info.input_size == tuple(model.input_size)
    assert info.num_classes == model.num_classes
    assert info.input_bits == raw_input_bits(info.kind)
    # event models take per-polarity frames (2 channels), static models images
    assert (info.kind == "events") == (info.input_size[0] == 2)
    assert name in list_models(module=info.module)


def test_model_info_without_building() -> None:
    info = model_info("spikformer_2_256_dvs")
    assert (info.kind, info.input_bits, info.input_size) == ("events", None, (2, 128, 128))
    info = model_info("sew_resnet34")
    assert (info.kind, info.input_bits, info.num_classes) == ("static", 8, 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 10  # type: ignore[misc]


def test_zoo_table_names_only_registered_models() -> None:
    assert set(_registry._ZOO) <= set(list_models())


def test_model_info_unknown_name_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean 'resnet19'"):
        model_info("resnet91")


def test_register_model_with_metadata_and_without() -> None:
    def _tiny_events_net(**kwargs: object) -> torch.nn.Module:
        return torch.nn.Identity()

    def _tiny_bare_net(**kwargs: object) -> torch.nn.Module:
        return torch.nn.Identity()

    try:
        register_model(input_size=(2, 16, 16), num_classes=3, kind="events")(_tiny_events_net)
        info = model_info("_tiny_events_net")
        assert info == ModelInfo("_tiny_events_net", "test_model_info", (2, 16, 16), 3, "events")
        assert info.input_bits is None
        register_model(_tiny_bare_net)
        assert "_tiny_bare_net" in list_models()
        with pytest.raises(ValueError, match="without metadata"):
            model_info("_tiny_bare_net")
        with pytest.raises(ValueError, match="both input_size and num_classes"):
            register_model(input_size=(3, 8, 8))(_tiny_bare_net)
        with pytest.raises(ValueError, match="kind must be"):
            register_model(input_size=(3, 8, 8), num_classes=2, kind="video")(_tiny_bare_net)
    finally:
        for name in ("_tiny_events_net", "_tiny_bare_net"):
            _registry._model_entrypoints.pop(name, None)
            _registry._model_to_module.pop(name, None)
            _registry._model_info.pop(name, None)
