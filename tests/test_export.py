"""``qsnn export`` (issue 17): safetensors and plain ONNX of a tiny trained digits run.

The default tests train one tiny run (``small_convnet`` on the embedded digits, one epoch, a few
seconds) and check the safetensors round trip (the rebuilt model's logits equal qsnn's, bit for
bit, on the whole test split), the plain-tensor export path (same logits as the module's own
forward), the refusals and the missing-package messages. The ONNX round trips through
onnxruntime take about 10 s of export each and are marked slow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from qsnn import cli
from qsnn.train import TrainConfig, load_run, train

INSTALL = "pip install 'qsnn[export]'"


def _train(out: Path, bits: str) -> Path:
    import torch._dynamo.config

    with torch._dynamo.config.patch(disable=True):  # no kernel compilation in a tiny run
        train(
            TrainConfig(
                model="small_convnet", dataset="digits", bits=bits, epochs=1, batch_size=64,
                precision="fp32", progress=False, threads=1, profile_batches=0, precise_bn=256,
            ),
            out,
        )
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run at 4/2/2 (2-bit spikes, T = 2)."""
    return _train(tmp_path_factory.mktemp("export") / "run", "4/2/2")


def _test_batches(run_dir: Path, limit: int | None = None):
    """qsnn's model of the run and its test batches (the first ``limit`` samples)."""
    model, _, data = load_run(run_dir)
    test = data.test if limit is None else data.test.subset(range(limit))
    return model, list(test.batches(128, device="cpu"))


@pytest.fixture(scope="module")
def loaded(run: Path):
    """The run's model and one batch of 64 test samples (2 CPUs: a full pass takes seconds)."""
    return _test_batches(run, 64)


def test_safetensors_round_trip_identical(run: Path, loaded, tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from qsnn.export import export_run, load_safetensors, safetensors_metadata

    path = export_run(run, "safetensors", tmp_path / "m.safetensors")
    meta = safetensors_metadata(path)
    assert meta["model_args"]["name"] == "small_convnet"
    assert meta["model_args"]["bits"] == "4/2/2"
    assert meta["config"]["dataset"] == "digits"
    assert meta["input"]["kind"] == "static" and meta["input"]["sample_shape"] == [1, 8, 8]
    assert meta["weights"] == "best.pt"
    # No pickle anywhere: the header is JSON and the body raw tensors.
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert "features.0.conv.weight" in header

    model, batches = loaded
    rebuilt = load_safetensors(path)
    assert not rebuilt.training
    with torch.no_grad():
        for x, _ in batches:
            assert torch.equal(model(x), rebuilt(x))


def test_safetensors_default_path_and_check(run: Path) -> None:
    pytest.importorskip("safetensors")
    from qsnn.export import check_export, export_run

    path = export_run(run, "safetensors")
    assert path == run / "export" / "model.safetensors" and path.is_file()
    r = check_export(run, path, "safetensors", limit=32)
    assert r["n"] == 32 and r["agreement"] == 1.0 and r["max_abs_diff"] == 0.0


def test_safetensors_refuses_foreign_and_mismatched_files(run: Path, tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    from qsnn.export import export_run, load_safetensors

    foreign = tmp_path / "foreign.safetensors"
    st.save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a qsnn safetensors export"):
        load_safetensors(foreign)

    path = export_run(run, "safetensors", tmp_path / "m.safetensors")
    tensors = st.load_file(str(path))
    tensors.pop("head.bias")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    broken = tmp_path / "broken.safetensors"
    st.save_file(tensors, str(broken), metadata=metadata)
    with pytest.raises(ValueError, match="does not fit the model its metadata names"):
        load_safetensors(broken)


def test_export_friendly_path_same_logits(loaded) -> None:
    from qsnn.export import export_friendly

    model, batches = loaded
    with torch.no_grad():
        ref = [model(x) for x, _ in batches]
        with export_friendly(model):
            assert "forward" in vars(model.features[0].sn)
            with export_friendly(model):  # nested: a no-op
                pass
            got = [model(x) for x, _ in batches]
    for a, b in zip(ref, got, strict=True):
        assert torch.equal(a, b)
    assert all("forward" not in vars(m) and "quantized_weight" not in vars(m)
               for m in model.modules())


def test_unknown_format_and_event_runs_refused(run: Path, loaded, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from qsnn.export import export_run
    from qsnn.export.onnx_format import save_onnx

    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_run(run, "tflite")
    model = loaded[0]
    info = {"input": {"kind": "events"}, "config": {"dataset": "dvs_gesture"}, "model_args": {}}
    with pytest.raises(ValueError, match="ONNX export supports models of static image datasets"):
        save_onnx(model, info, tmp_path / "m.onnx")


@pytest.mark.parametrize(
    ("fmt", "modules"),
    [
        ("safetensors", ["safetensors", "safetensors.torch"]),
        ("onnx", ["onnx"]),
        ("onnx", ["onnxscript"]),
        ("qonnx", ["onnx"]),
    ],
)
def test_missing_package_names_install_line(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, fmt: str, modules: list
) -> None:
    from qsnn.export import export_run

    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as err:
        export_run(run, fmt, tmp_path / f"m.{fmt}")
    assert INSTALL in str(err.value) and repr(modules[0]) in str(err.value)
    # The CLI turns it into one line.
    assert cli.main(["export", str(run), "--format", fmt, "--out", str(tmp_path / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsnn: error: ") and INSTALL in lines[0]


def test_missing_runtimes_for_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qsnn.export.onnx_format import onnx_session
    from qsnn.export.qonnx_format import qonnx_run

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "qonnx", None)
    with pytest.raises(ImportError, match=r"'onnxruntime'.*pip install 'qsnn\[export\]'"):
        onnx_session(tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=r"'qonnx'.*pip install 'qsnn\[export\]'"):
        qonnx_run(tmp_path / "m.onnx")


def test_qonnx_refuses_spiking_allocations(run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    assert cli.main(["export", str(run), "--format", "qonnx", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "QONNX export needs a T = 1 allocation" in err[0]
    assert "this run has T = 2 (4/2/2)" in err[0] and "use --format onnx" in err[0]
    assert not (tmp_path / "q").exists()


def test_cli_export_safetensors_check(run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("safetensors")
    out = tmp_path / "cli.safetensors"
    assert cli.main(["export", str(run), "--format", "safetensors", "--out", str(out),
                     "--check", "--limit", "32"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert f"wrote {out} (safetensors)" in text
    assert "agreement 100.00% on 32 test samples" in text
    # The check's stage on stderr (stdout keeps the result); --no-progress: none.
    assert f"export: checking {out} on 32 test samples (safetensors)" in captured.err
    assert cli.main(["export", str(run), "--format", "safetensors", "--out", str(out),
                     "--check", "--limit", "32", "--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == text


def test_cli_export_errors_are_one_line(run: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["export", str(tmp_path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a qsnn run directory" in err[0]
    with pytest.raises(SystemExit) as stop:  # argparse's own one line
        cli.main(["export", str(run), "--format", "tflite"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'tflite'" in err[0]
    assert cli.main(["export", str(run), "--format", "onnx", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a directory, not a file" in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("bits", ["4/2/2", "1/1/4"])
def test_onnx_onnxruntime_predictions_equal(
    run: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, bits: str
) -> None:
    """The ONNX graph in onnxruntime predicts what qsnn predicts on the whole digits test set
    (binary and 2-bit spikes), at any batch size."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from qsnn.export import check_export, export_run
    from qsnn.export.onnx_format import onnx_session

    run_dir = run if bits == "4/2/2" else _train(tmp_path_factory.mktemp("b") / "run", bits)
    path = export_run(run_dir, "onnx", tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["qsnn.bits"] == bits and json.loads(meta["qsnn.input"])["mean"]
    ops = {n.op_type for n in proto.graph.node}
    assert {"Floor", "Clip", "Conv"} <= ops and "PythonOp" not in ops
    r = check_export(run_dir, path, "onnx")
    assert r["n"] == 359 and r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-4
    assert r["acc_export"] == r["acc_qsnn"]
    # Batch sizes other than the traced one.
    model, batches = _test_batches(run_dir, 64)
    session = onnx_session(path)
    x = batches[0][0]
    for b in (1, 7):
        got = torch.from_numpy(session.run(["logits"], {"input": x[:b].numpy()})[0])
        with torch.no_grad():
            assert torch.allclose(got, model(x[:b]), atol=1e-4)


@pytest.mark.slow
def test_cli_export_onnx_check(run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert cli.main(["export", str(run), "--format", "onnx", "--check"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {run / 'export' / 'model.onnx'} (onnx)" in text
    assert "agreement 100.00% on 359 test samples" in text


@pytest.mark.slow
@pytest.mark.parametrize("bits", ["2/4/1", "1/2/1"])
def test_qonnx_executor_predictions_equal(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, bits: str
) -> None:
    """A T = 1 run as QONNX: Quant nodes with the run's bit-widths, and qonnx's executor
    predicts what qsnn predicts on the whole digits test set (2-bit and binary weights)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("qonnx")
    from qsnn.export import check_export, export_run
    from qsnn.export.qonnx_format import DOMAIN

    run_dir = _train(tmp_path_factory.mktemp("q") / "run", bits)
    path = export_run(run_dir, "qonnx", tmp_path / "m.qonnx.onnx", batch_size=128)
    proto = onnx.load(str(path))
    quants = [n for n in proto.graph.node if n.op_type == "Quant"]
    assert quants and all(n.domain == DOMAIN for n in quants)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    b_w, b_s = (int(v) for v in bits.split("/")[:2])
    widths = {}
    for n in quants:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        mode = attrs["rounding_mode"].decode()
        widths.setdefault(mode, set()).add(int(inits[n.input[3]]))
    assert widths["FLOOR"] == {b_s}  # activations: the neurons' b_s
    assert b_w in widths["ROUND"]  # weights: b_w (the stem's and head's may differ)
    r = check_export(run_dir, path, "qonnx")
    assert r["n"] == 359 and r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sew_resnet18_cifar", "resnet19", "spikformer_4_256_cifar"])
def test_onnx_zoo_models_same_logits(tmp_path: Path, name: str) -> None:
    """The plain ONNX path beyond small_convnet: residual sums, the restricted SEW ADD and
    Spikformer's attention quantizer (untrained models, random images; about a minute each)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import qsnn
    from qsnn.export import export_friendly
    from qsnn.export.onnx_format import onnx_session, save_onnx

    torch.manual_seed(0)
    model = qsnn.create_model(name, bits="4/2/2", num_classes=10, in_channels=3, img_size=(32, 32))
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with export_friendly(model):
            assert torch.equal(model(x), ref)
    info = {
        "input": {"kind": "static", "sample_shape": [3, 32, 32], "mean": None, "std": None},
        "config": {},
        "model_args": {"name": name, "bits": "4/2/2"},
    }
    path = save_onnx(model, info, tmp_path / "m.onnx")
    got = torch.from_numpy(onnx_session(path).run(["logits"], {"input": x.numpy()})[0])
    assert torch.allclose(got, ref, atol=1e-4)
    assert torch.equal(got.argmax(1), ref.argmax(1))
