"""The top-level API a newcomer expects (timm style): ``qsnn.create_model``, ``qsnn.list_models``,
``qsnn.profile``, ``qsnn.get_dataset``, ``qsnn.TrainConfig`` and ``qsnn.train`` work after a bare
``import qsnn``, and ``import qsnn`` pulls in nothing optional."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

OPTIONAL = ("tonic", "matplotlib", "torchvision", "spikingjelly", "snntorch", "yaml", "PIL")


def run_fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it prints one JSON line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_qsnn_is_light_and_pulls_in_nothing_optional():
    got = run_fresh(f"""
        import json, sys
        import qsnn
        light = sorted(m for m in sys.modules if m.startswith("qsnn."))
        qsnn.create_model, qsnn.list_models, qsnn.profile, qsnn.get_dataset, qsnn.train
        qsnn.TrainConfig, qsnn.load_run
        print(json.dumps({{"light": light,
                          "optional": [m for m in {OPTIONAL!r} if m in sys.modules]}}))
    """)
    assert not any(m.startswith(("qsnn.models", "qsnn.train", "qsnn.data", "qsnn.metrics"))
                   for m in got["light"]), got["light"]
    assert got["optional"] == []


def test_top_level_names_without_importing_submodules():
    got = run_fresh("""
        import json
        import torch
        import qsnn
        model = qsnn.create_model("small_convnet", bits="4/2/2")
        report = qsnn.profile(model, torch.zeros(1, 3, 32, 32))
        data = qsnn.get_dataset("digits", split="train")
        print(json.dumps({
            "bits": str(model.bits), "sew": qsnn.list_models("sew_resnet18*"),
            "layers": len(report.layers), "s_ace_positive": report.totals["s_ace"] > 0,
            "train_images": len(data), "train_is_callable": callable(qsnn.train),
            "train_is_package": qsnn.train.__name__,
            "config": qsnn.TrainConfig(model="small_convnet").model,
        }))
    """)
    assert got["bits"] == "4/2/2"
    assert got["sew"] == ["sew_resnet18", "sew_resnet18_cifar"]
    assert got["layers"] > 0 and got["s_ace_positive"]
    assert got["train_images"] > 0
    assert got["train_is_callable"] and got["train_is_package"] == "qsnn.train"
    assert got["config"] == "small_convnet"


def test_qsnn_train_is_the_train_function(tmp_path):
    """``qsnn.train(config, out)`` runs the same training as ``qsnn.train.train``: with
    deterministic fp32 on one thread, two runs give identical metrics."""
    import qsnn
    from qsnn.train import train as train_function

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    config = qsnn.TrainConfig(
        model="small_convnet", dataset="digits", bits="1/2/1", epochs=1, batch_size=64,
        precision="fp32", deterministic=True, threads=1, progress=False, profile_batches=0,
        device="cpu", precise_bn=256, model_options={"widths": [8, 8, 8, 8, 8]},
    )  # fmt: skip
    try:
        a = qsnn.train(config, tmp_path / "a")
        b = train_function(config, tmp_path / "b")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    assert a["test_acc_best"] == b["test_acc_best"] and a["val_acc_best"] == b["val_acc_best"]
    assert (tmp_path / "a" / "result.json").exists()
