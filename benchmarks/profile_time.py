"""Wall time of ``qsnn.metrics.profile`` on ResNet-18-size models at 224x224 (issue 3).

Reference in the same process: a plain forward pass of the same model under ``torch.no_grad``
(the profile runs one forward pass under a dispatch mode, so the ratio is its overhead).

Run: ``.venv/bin/python benchmarks/profile_time.py``
(writes ``benchmarks/results/profile_time.json``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from qsnn.metrics import profile
from qsnn.models import create_model


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224)
    rows = {}
    for name, bits in (("sew_resnet18", "32/16/1"), ("sew_resnet18", "4/2/2")):
        model = create_model(name, bits=bits, neuron={"kernel": "eager"}).eval()
        with torch.no_grad():
            forward = _best_of(lambda m=model: m(x))
        prof_time = _best_of(lambda m=model: profile(m, x))
        p = profile(model, x)
        key = f"{name} {bits}"
        rows[key] = {"profile_s": prof_time, "forward_s": forward,
                     "overhead": prof_time / forward, "macs_per_step": p.macs}
        print(f"{key:>22}: profile {prof_time:.2f} s, plain forward {forward:.2f} s "
              f"({prof_time / forward:.1f}x), {p.macs / 1e9:.3f} G MACs/step")
    out = Path(__file__).parent / "results" / "profile_time.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                               "load_average_1m": os.getloadavg()[0], "cases": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
