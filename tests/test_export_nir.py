"""NIR export (issue 17): a tiny trained binary-spike MLP on the embedded digits, read back by an
independent consumer (``nirtorch.nir_to_torch`` with node modules written from the NIR node
equations, and snnTorch's own importer), compared with qsnn's logits on the test split; the
neuron mapping against a hand-computed membrane trace; residual nets (ResNet-19's membrane sum,
SEW-ResNet's restricted ADD as an OR); the refusals (multi-bit spikes, max pooling, soft reset,
attention) and the missing-package message.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from qsnn.models import SpikingModel, create_model, register_model
from qsnn.models.layers import SpikingStem
from qsnn.models.stages import Flatten, Head, LinearSpike, Stem
from qsnn.temporal import TimeMean
from qsnn.train import TrainConfig, load_run, train

pytest.importorskip("nir")
pytest.importorskip("nirtorch")

INSTALL = "pip install 'qsnn[export]'"
NAME = "nir_test_mlp"


class TinyMLP(SpikingModel):
    """``flatten -> linear -> BN -> LIF -> linear -> BN -> LIF -> linear``, mean over ``T``: a
    spiking MLP declared as stages (the zoo registers no MLP)."""

    def __init__(
        self,
        *,
        bits: Any,
        num_classes: int = 10,
        in_channels: int = 1,
        img_size: Any = 8,
        hidden: int = 48,
        overrides: Any = None,
        neuron: Any = None,
        quant: Any = None,
    ) -> None:
        f = self._begin(bits, num_classes, in_channels, img_size, neuron, quant)
        c, h, w = self.input_size
        first = nn.Sequential(nn.Flatten(), f.linear(c * h * w, hidden), nn.BatchNorm1d(hidden))
        self.stem = SpikingStem(f.bits.t, first, f.neuron_module(), in_channels=in_channels)
        self.fc2, self.bn2, self.sn2 = (
            f.linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            f.neuron_module(),
        )
        self.head = f.linear(hidden, num_classes)
        self.readout = TimeMean()
        self._finish(bits, overrides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.stem(x))  # [T, B, hidden]
        y = self.bn2(y.flatten(0, 1)).view_as(y)
        return self.readout(self.head(self.sn2(y)))

    def stages(self) -> tuple:
        return (
            Stem(self.stem),
            LinearSpike(self.fc2, self.sn2, self.bn2),
            Head(self.head, self.readout),
        )


def nir_test_mlp(**kwargs: Any) -> TinyMLP:
    return TinyMLP(**kwargs)


@pytest.fixture(scope="module")
def mlp_name() -> Iterator[str]:
    """The tiny MLP registered for this module only (the zoo's model list stays as it is)."""
    from qsnn.models import _registry

    register_model(input_size=(1, 8, 8), num_classes=10, kind="static")(nir_test_mlp)
    yield NAME
    for table in (_registry._model_entrypoints, _registry._model_to_module, _registry._model_info):
        table.pop(NAME, None)


@pytest.fixture(scope="module")
def run(mlp_name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny run at 4/1/4 (binary spikes, T = 4): a few seconds on one thread."""
    import torch._dynamo.config

    out = tmp_path_factory.mktemp("nir") / "run"
    with torch._dynamo.config.patch(disable=True):
        train(
            TrainConfig(
                model=mlp_name,
                dataset="digits",
                bits="4/1/4",
                epochs=2,
                batch_size=64,
                lr=1e-2,
                precision="fp32",
                progress=False,
                threads=1,
                profile_batches=0,
                precise_bn=256,
            ),
            out,
        )
    return out


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    from qsnn.export import export_run

    return export_run(run, "nir")


def test_round_trip_agrees_on_digits(run: Path, exported: Path) -> None:
    from qsnn.export import check_export

    assert exported == run / "export" / "model.nir" and exported.exists()
    r = check_export(run, exported, "nir")
    assert r["n"] == 359  # the whole digits test split
    assert r["acc_qsnn"] > 0.6  # a trained model, so agreement is not that of constant logits
    assert r["agreement"] == 1.0
    assert r["max_abs_diff"] < 1e-5
    assert r["acc_export"] == r["acc_qsnn"]


def test_graph_holds_folded_quantized_layers_and_lif(run: Path, exported: Path) -> None:
    """Node by node against the model's own modules: each Affine equals ``bn(linear(s))`` on
    the spikes ``s = theta z`` it receives, the LIF nodes hold ``tau = dt / (1 - beta)``,
    ``r = 1 / (1 - beta)``, the neuron's threshold and reset."""
    import nir

    from qsnn.export.nir_format import DT

    model, _, _ = load_run(run)
    model.eval()
    graph = nir.read(exported)
    assert graph.metadata["time_steps"] == 4 and graph.metadata["model"] == NAME
    order = sorted(graph.nodes, key=lambda n: int("".join(c for c in n if c.isdigit()) or -1))
    nodes = [graph.nodes[n] for n in order]  # in the order they were written
    kinds = [type(n).__name__ for n in nodes]
    assert kinds.count("LIF") == 2 and kinds.count("Affine") == 3 and "Flatten" in kinds
    lifs = [n for n in nodes if isinstance(n, nir.LIF)]
    affines = [n for n in nodes if isinstance(n, nir.Affine)]
    for lif, sn in zip(lifs, (model.stem.sn, model.sn2), strict=True):
        beta = 1.0 / sn.tau  # 0.5 at the default tau = 2
        np.testing.assert_allclose(lif.tau, DT / (1 - beta))
        np.testing.assert_allclose(lif.r, 1 / (1 - beta))
        np.testing.assert_allclose(lif.v_threshold, sn.theta)
        np.testing.assert_allclose(lif.v_reset, 0.0)
        np.testing.assert_allclose(lif.v_leak, 0.0)
    # The quantized weights (b_w = 4: at most 15 levels per output row, times BN's g).
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 64, generator=gen)
    z = (torch.rand(16, 48, generator=gen) < 0.3).float()
    with torch.no_grad():
        refs = [
            model.stem.encoder.stem(x.view(16, 1, 8, 8)),
            model.bn2(model.fc2(model.stem.sn.theta * z)),
            model.head(model.sn2.theta * z),
        ]
    for node, inp, ref in zip(affines, (x, z, z), refs, strict=True):
        got = inp @ torch.from_numpy(node.weight).T + torch.from_numpy(node.bias)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # Folding BN scales each row of the first layer by one g: its levels stay 2**4 - 1 = 15.
    w = torch.from_numpy(affines[0].weight)
    levels = (w / w.abs().amax(1, keepdim=True)).mul(7).round()
    torch.testing.assert_close(levels / 7 * w.abs().amax(1, keepdim=True), w)


def test_lif_node_reproduces_a_hand_computed_trace() -> None:
    """qsnn's neuron at tau = 2, theta = 1 on a constant current 0.6: ``h = 0.6, 0.9, 1.05``
    (fires, reset to 0), ``0.6``, ``0.9``: spikes 0 0 1 0 0. The exported LIF node run by the
    consumer gives the same spikes."""
    from qsnn.export.nir_format import node_map, to_nir
    from qsnn.neurons import SpikeNeuron

    current = torch.full((5, 1, 1), 0.6)
    want = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    qsnn_spikes = SpikeNeuron(1, tau=2.0, theta=1.0)(current).flatten()
    assert torch.equal(qsnn_spikes, want)

    class One(SpikingModel):  # the input current straight into one neuron, head = identity
        def __init__(self) -> None:
            f = self._begin("32/1/5", 1, 1, 1, {"tau": 2.0, "theta": 1.0}, None)
            self.stem = SpikingStem(5, None, f.neuron_module(), in_channels=1)
            self.head = nn.Linear(1, 1)
            nn.init.ones_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.readout = TimeMean()
            self._finish("32/1/5", None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.readout(self.head(self.stem(x).flatten(2)))

        def stages(self) -> tuple:
            return (Stem(self.stem), Flatten(), Head(self.head, self.readout))

    graph = to_nir(One(), input_shape=(1, 1, 1))
    lif = next(n for n in graph.nodes.values() if type(n).__name__ == "LIF")
    module = node_map()[type(lif)](lif)
    state, got = None, []
    for step in current:
        z, state = module(step, state)
        got.append(float(z))
    assert got == want.tolist()


def test_snntorch_importer_agrees(run: Path, exported: Path) -> None:
    """snnTorch's importer (``Leaky`` at its assumed dt = 1e-4) on 16 test samples. Its
    ``Flatten`` takes NIR's batch-free dims as batch dims, so samples go one at a time."""
    pytest.importorskip("snntorch")
    import contextlib
    import io

    import nir
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per graph
        net = import_from_nir(nir.read(exported))
    model, _, data = load_run(run)
    same = 0
    with torch.no_grad():
        for x, _ in data.test.subset(range(16)).batches(1, device="cpu"):
            snntorch.utils.reset(net)
            outs = [net(x.float())[0] for _ in range(model.time_steps)]
            same += int(torch.stack(outs).mean(0).argmax() == model(x).argmax(1))
    assert same == 16


def _same_function(got: torch.Tensor, ref: torch.Tensor, flips: int = 2) -> None:
    """The NIR graph computes qsnn's logits up to float32 rounding: folding batch norm rounds a
    membrane differently (~1e-7 relative), and a membrane that close to the threshold fires in
    one and not the other. So all but at most ``flips`` samples must match to 1e-5 (the weights
    are seeded, so a given platform gives the same count every run)."""
    close = ((got - ref).abs() <= 1e-5 + 1e-5 * ref.abs()).all(dim=1)
    assert int((~close).sum()) <= flips, f"{int((~close).sum())} of {len(close)} samples differ"
    assert (got.argmax(1) != ref.argmax(1)).sum() <= flips


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch-norm statistics and affines away from the identity, so folding matters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.8)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.3 + 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from qsnn.data import get_dataset

    x, _ = next(iter(get_dataset("digits", split="test").batches(64, device="cpu")))
    return x.float()


@pytest.mark.parametrize(
    ("name", "kwargs", "node"),
    [
        ("resnet19", {"stem_width": 4, "widths": (4, 8, 8, 8)}, "Conv2d"),  # membrane sums
        ("sew_resnet18_cifar", {"widths": (4, 4, 8, 8)}, "IF"),  # restricted ADD = OR
    ],
)
def test_residual_nets_agree(name: str, kwargs: dict, node: str, digits: torch.Tensor) -> None:
    from qsnn.export.nir_format import nir_run, to_nir

    torch.manual_seed(0)  # the weights (an unseeded init made the count of flips vary)
    model = _random_bn(
        create_model(name, bits="4/1/2", num_classes=10, in_channels=1, img_size=8, **kwargs)
    )
    graph = to_nir(model)
    assert any(type(n).__name__ == node for n in graph.nodes.values())
    assert any(type(n).__name__ == "AvgPool2d" for n in graph.nodes.values())
    with torch.no_grad():
        ref, got = model(digits), nir_run(graph)(digits)
    assert ref.std() > 0  # spikes reach the head
    _same_function(got, ref)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("small_convnet", {}), ("sew_resnet18", {"widths": (4, 4, 8, 8)})],  # max-pooled spikes
)
def test_max_pool_of_binary_spikes_is_an_or(name: str, kwargs: dict, digits: torch.Tensor) -> None:
    """max over a window of theta z (z in {0, 1}) is theta OR(z): SumPool2d into an IF gate
    with threshold 0.5; same logits as qsnn's max pool."""
    from qsnn.export.nir_format import nir_run, to_nir

    torch.manual_seed(0)  # the weights (an unseeded init made the count of flips vary)
    model = _random_bn(
        create_model(name, bits="4/1/2", num_classes=10, in_channels=1, img_size=8, **kwargs)
    )
    graph = to_nir(model)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert "SumPool2d" in kinds
    with torch.no_grad():
        ref, got = model(digits), nir_run(graph)(digits)
    assert ref.std() > 0
    _same_function(got, ref)


def test_max_pool_of_values_that_are_not_spikes_is_refused() -> None:
    import nir

    from qsnn.export.nir_format import _Builder, _Ref

    builder = _Builder(nir, 1e-4)
    with pytest.raises(ValueError, match="max-pools values that are not binary spikes"):
        builder.max_pool(_Ref("input", (2, 4, 4)), nn.MaxPool2d(2), "pool")


def test_integrate_and_fire_and_reset_potential(mlp_name: str, digits: torch.Tensor) -> None:
    """tau = 1 becomes NIR's IF; a non-zero v_reset is carried over."""
    from qsnn.export.nir_format import nir_run, to_nir

    for neuron, kind in (({"tau": 1.0}, "IF"), ({"tau": 4.0, "v_reset": -0.25}, "LIF")):
        torch.manual_seed(0)
        model = _random_bn(create_model(mlp_name, bits="4/1/3", neuron=neuron))
        graph = to_nir(model)
        cells = [n for n in graph.nodes.values() if type(n).__name__ == kind]
        assert len(cells) == 2
        np.testing.assert_allclose(cells[0].v_reset, neuron.get("v_reset", 0.0))
        with torch.no_grad():
            _same_function(nir_run(graph)(digits), model(digits))


@pytest.mark.parametrize(
    ("name", "bits", "kwargs", "message"),
    [
        (
            NAME,
            "4/2/4",
            {},
            "2-bit spikes (b_s = 2); NIR's neurons emit binary spikes and NIR "
            "has no multi-bit spike node",
        ),
        (NAME, "4/1/4", {"neuron": {"reset": "soft"}}, "resets by subtraction"),
        ("spikformer_2_384_cifar", "4/1/2", {}, "self-attention multiplies two spike tensors"),
    ],
)
def test_refusals_name_the_reason(
    mlp_name: str, name: str, bits: str, kwargs: dict, message: str
) -> None:
    from qsnn.export.nir_format import to_nir

    model = create_model(name, bits=bits, num_classes=10, in_channels=1, img_size=8, **kwargs)
    with pytest.raises(ValueError, match="NIR export") as err:
        to_nir(model)
    assert message in str(err.value)


def test_missing_packages_name_the_install_line(
    run: Path, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qsnn.export import check_export, export_run

    monkeypatch.setitem(sys.modules, "nirtorch", None)
    with pytest.raises(ImportError, match="'nirtorch'") as err:
        check_export(run, exported, "nir", limit=8)
    assert INSTALL in str(err.value)
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(ImportError, match="'nir'") as err:
        export_run(run, "nir", tmp_path / "m.nir")
    assert INSTALL in str(err.value)
    assert not (tmp_path / "m.nir").exists()


def test_average_pooled_spikes_are_not_binary_spikes() -> None:
    """The mean of a window of spikes takes values k/n, so a max pool (or a SEW OR) after an
    average pool is not an OR of binary spikes and must be refused."""
    import nir

    from qsnn.export.nir_format import _Builder, _Ref

    builder = _Builder(nir, 1e-4)
    spikes = _Ref("sn", (2, 8, 8), 0.5, True)
    avg = builder.pool(spikes, nn.AvgPool2d(2), "avg")
    assert avg.scale == 0.5  # still theta times the node's output (a linear pool)
    with pytest.raises(ValueError, match="max-pools values that are not binary spikes"):
        builder.max_pool(avg, nn.MaxPool2d(2), "pool")
    with pytest.raises(ValueError, match="not two spike trains"):
        builder.spike_or(avg, avg, 0.5, "add")
    pooled = builder.max_pool(spikes, nn.MaxPool2d(3, 2, 1), "pool")  # binary: an OR
    assert pooled.spikes and pooled.scale == 0.5 and pooled.shape == (2, 4, 4)
