"""Training throughput of qsnn's zoo models against a plain float model and SpikingJelly (issue 6).

One process, same data (batch 128 of random 3x32x32 images), one training step = forward,
cross-entropy, backward and an AdamW update, timed as the median over ``--steps`` steps after
``--warmup`` untimed ones (qsnn's fused neuron kernel compiles during warm-up). The nets of one
case are timed round-robin, one step each per round, so that load from other processes (the
machine is shared; the JSON records how many cores they used) falls on all alike. For each model
(``small_convnet``, ``sew_resnet18_cifar``) and allocation ``b_w/b_s/T`` it measures images/s of

- qsnn: the model from ``create_model``, trained as ``qsnn.train.engine`` does (bf16 autocast and
  channels-last where the CPU supports them, AdamW on the engine's parameter groups);
- plain: a plain PyTorch float model of the same shape, ``nn.ReLU`` in place of every neuron,
  unquantized ``nn.Conv2d``/``nn.Linear``, the same batch norms, pooling and ``T``: the stem runs
  once and its output is repeated ``T`` times (as qsnn's ``StaticEncoder`` does), ``T`` folded
  into the batch, logits averaged over ``T``; same settings;
- SpikingJelly 2.0 (with ``--spikingjelly``): the same net from its multi-step layers
  (``step_mode='m'``) and ``LIFNode`` (b_s = 1) or a ``LIFNode`` subclass firing the b_s-bit
  staircase (b_s > 1), ``functional.reset_net`` after each step, at its defaults (fp32,
  contiguous) and with the same bf16/channels-last settings.

Targets (SPEC §11, issue 6): qsnn step time <= 1.2x the plain model's at the same ``T`` (at
``T > 1`` that reference is the float model run on the input repeated ``T`` times); qsnn at least
2.5x faster than SpikingJelly's default CPU path and 1.3x faster than SpikingJelly with the same
settings. Prints a markdown table; writes ``benchmarks/results/train_throughput.json`` (cases
measured earlier with other ``--models``/``--bits`` are kept).

SpikingJelly lives outside the project's environment: ``bash benchmarks/setup_spikingjelly.sh``
installs it (without dependencies) into ``benchmarks/.sj``, which ``--spikingjelly`` puts on
``sys.path``.

Run: ``.venv/bin/python benchmarks/train_throughput.py --spikingjelly [--steps 3] [--warmup 2]
[--models small_convnet] [--bits 1/1/4,4/2/2] [--profile]``
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

import qsnn
from qsnn.io import write_json_atomic
from qsnn.models import create_model
from qsnn.train.engine import _channels_last, _cpu_bf16, _param_groups

MODELS = ("small_convnet", "sew_resnet18_cifar")
ALLOCATIONS = ("1/1/4", "4/4/1", "4/2/2")
SJ_DIR = Path(__file__).parent / ".sj"
OUT = Path(__file__).parent / "results" / "train_throughput.json"
TARGET_PLAIN = 1.2  # qsnn step <= 1.2 x plain step at the same T
TARGET_SJ_DEFAULT = 2.5  # qsnn >= 2.5 x faster than SpikingJelly fp32 + contiguous
TARGET_SJ_SAME = 1.3  # qsnn >= 1.3 x faster than SpikingJelly with bf16 + channels-last
SMALL_WIDTHS = (32, 64, 64, 128, 128)


# -- plain PyTorch float references (nn.ReLU for every neuron, T folded into the batch) -------
def _repeat_time(x: Tensor, steps: int) -> Tensor:
    """``[B, ...] -> [T*B, ...]``; ``cat`` keeps channels-last (a reshape copy would not)."""
    return x if steps == 1 else torch.cat([x] * steps)


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class PlainSmallConvNet(nn.Module):
    """``small_convnet`` as a float ANN: 5 convs + BN + ReLU, max-pools, linear; ``T`` repeats."""

    def __init__(self, time_steps: int, num_classes: int = 10) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = SMALL_WIDTHS
        self.time_steps = time_steps
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0))
        self.features = nn.Sequential(
            nn.ReLU(),
            _conv_bn_relu(w0, w1), nn.MaxPool2d(2),
            _conv_bn_relu(w1, w2),
            _conv_bn_relu(w2, w3), nn.MaxPool2d(2),
            _conv_bn_relu(w3, w4), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(w4 * 4 * 4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        x = _repeat_time(self.stem(x), self.time_steps)  # [B, 32, 32, 32] -> [T*B, 32, 32, 32]
        x = self.features(x).flatten(1)  # -> [T*B, 128*4*4]
        return self.head(x).unflatten(0, (self.time_steps, batch)).mean(0)  # -> [B, K]


class PlainBasicBlock(nn.Module):
    """SEW basic block with ReLU for neurons and a plain ``+`` for the restricted ADD."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout, 3, stride)
        self.conv2 = _conv_bn_relu(cout, cout, 3)
        downsample = stride != 1 or cin != cout
        self.downsample = _conv_bn_relu(cin, cout, 1, stride) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + identity


class PlainSEWResNet18(nn.Module):
    """``sew_resnet18_cifar`` as a float ANN (3x3/1 stem, no pool); ``T`` repeats."""

    def __init__(self, time_steps: int, num_classes: int = 10) -> None:
        super().__init__()
        self.time_steps = time_steps
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64))
        blocks: list[nn.Module] = [nn.ReLU()]
        cin = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [PlainBasicBlock(cin, planes, stride), PlainBasicBlock(planes, planes)]
            cin = planes
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        x = _repeat_time(self.stem(x), self.time_steps)  # [B, 64, 32, 32] -> [T*B, 64, 32, 32]
        x = self.pool(self.features(x)).flatten(1)  # -> [T*B, 512]
        return self.head(x).unflatten(0, (self.time_steps, batch)).mean(0)  # -> [B, K]


def make_plain(model: str, steps: int) -> nn.Module:
    return PlainSmallConvNet(steps) if model == "small_convnet" else PlainSEWResNet18(steps)


# -- SpikingJelly 2.0 ---------------------------------------------------------------------------
def import_spikingjelly() -> types.ModuleType | None:
    """``spikingjelly.activation_based`` from ``benchmarks/.sj``, or ``None`` with a note."""
    if not SJ_DIR.is_dir():
        print(f"note: {SJ_DIR} not found (run: bash benchmarks/setup_spikingjelly.sh); "
              "skipping the SpikingJelly columns")
        return None
    sys.path.insert(0, str(SJ_DIR))
    try:
        import loguru  # noqa: F401
    except ImportError:
        # spikingjelly.logger only imports loguru's logger and disables it; nothing here logs.
        stub = types.ModuleType("loguru")

        class _Silent:
            def __getattr__(self, name: str) -> Callable[..., None]:
                return lambda *args, **kwargs: None

        stub.logger = _Silent()  # type: ignore[attr-defined]
        sys.modules["loguru"] = stub
    try:
        import spikingjelly.activation_based as sj
        from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: F401
    except ImportError as err:
        print(f"note: spikingjelly does not import ({err}); skipping the SpikingJelly columns")
        return None
    return sj


def sj_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("spikingjelly")
    except Exception:
        return None


class _Staircase(torch.autograd.Function):
    """``clamp(floor(u), 0, L)`` with qsnn's default surrogate, the trapezoid
    ``g(u) = clamp(min(u, L + 1 - u), 0, 1)`` (sum of unit triangles at the L jumps)."""

    @staticmethod
    def forward(ctx, u: Tensor, levels: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.levels = levels
        return torch.clamp(torch.floor(u), 0, levels)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        g = torch.minimum(u, (ctx.levels + 1.0) - u).clamp_(0.0, 1.0)
        return grad * g, None


def sj_neuron_factory(sj: types.ModuleType, bits_s: int) -> Callable[[], nn.Module]:
    """SpikingJelly's multi-step LIF (b_s = 1) or a subclass firing b_s-bit levels (b_s > 1).

    tau = 2 with ``decay_input=False`` (``h = v/2 + x``, qsnn's charge), threshold 1, hard reset
    to 0, ``detach_reset=True``. b_s = 1: ``LIFNode`` with its ATan surrogate, which runs
    SpikingJelly's registered CPU LIF op. b_s > 1: a ``LIFNode`` subclass whose explicit-state
    step fires ``clamp(floor(h / theta), 0, 2**b_s - 1) * theta`` and hard-resets where it fired;
    its sequence runs SpikingJelly's default per-step loop (``MemoryModule``).
    """
    from spikingjelly.activation_based import base, neuron, surrogate

    common = {"tau": 2.0, "decay_input": False, "v_threshold": 1.0, "v_reset": 0.0,
              "detach_reset": True, "step_mode": "m"}
    if bits_s == 1:
        return lambda: neuron.LIFNode(surrogate_function=surrogate.ATan(), **common)
    levels = (1 << bits_s) - 1

    class MultiBitLIFNode(neuron.LIFNode):
        def single_step_functional_forward(self, inputs, states, **kwargs):
            x, v = inputs[0], states[0]
            h = v - (v - self.v_reset) / self.tau + x  # charge (decay_input=False)
            k = _Staircase.apply(h / self.v_threshold, levels)  # fire: b_s-bit level
            fired = (k > 0).to(h.dtype).detach()  # detach_reset
            v = fired * self.v_reset + (1.0 - fired) * h  # hard reset
            return ((k * self.v_threshold).to(x.dtype),), (v, *states[1:])

        multi_step_functional_forward = base.MemoryModule.multi_step_functional_forward

    return lambda: MultiBitLIFNode(surrogate_function=surrogate.ATan(), **common)


class SJNet(nn.Module):
    """A SpikingJelly multi-step net fed the static image repeated over ``T`` (its idiom)."""

    def __init__(self, body: nn.Module, time_steps: int, channels_last: bool) -> None:
        super().__init__()
        self.body = body
        self.time_steps = time_steps
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        x_seq = x.unsqueeze(0).repeat(self.time_steps, 1, 1, 1, 1)  # [B, ...] -> [T, B, ...]
        if self.channels_last:
            x_seq = _channels_last(x_seq)
        return self.body(x_seq).mean(0)  # [T, B, K] -> [B, K]


class SJBasicBlock(nn.Module):
    """SpikingJelly's SEW basic block (``model/sew_resnet.py``, ``cnf='ADD'``) from its layers.

    Rebuilt here because importing ``spikingjelly.activation_based.model`` needs torchvision and
    h5py; the layers, order and unrestricted ADD are SpikingJelly's.
    """

    def __init__(self, layer: types.ModuleType, node: Callable[[], nn.Module], cin: int,
                 cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = layer.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = layer.BatchNorm2d(cout)
        self.sn1 = node()
        self.conv2 = layer.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = layer.BatchNorm2d(cout)
        self.sn2 = node()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(layer.Conv2d(cin, cout, 1, stride, bias=False),
                                            layer.BatchNorm2d(cout))
            self.downsample_sn = node()

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))))
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return identity + out  # sew_function(identity, out, "ADD")


def make_sj(sj: types.ModuleType, model: str, bits: qsnn.Bits, channels_last: bool) -> nn.Module:
    from spikingjelly.activation_based import functional, layer

    node = sj_neuron_factory(sj, bits.s)
    if model == "small_convnet":
        w0, w1, w2, w3, w4 = SMALL_WIDTHS

        def cbn(cin: int, cout: int) -> list[nn.Module]:
            return [layer.Conv2d(cin, cout, 3, padding=1, bias=False), layer.BatchNorm2d(cout),
                    node()]

        body = nn.Sequential(
            *cbn(3, w0), *cbn(w0, w1), layer.MaxPool2d(2), *cbn(w1, w2), *cbn(w2, w3),
            layer.MaxPool2d(2), *cbn(w3, w4), layer.MaxPool2d(2), layer.Flatten(),
            layer.Linear(w4 * 4 * 4, 10),
        )
    else:  # SEW-ResNet-18, CIFAR stem (3x3/1 conv, no max-pool)
        blocks: list[nn.Module] = [layer.Conv2d(3, 64, 3, 1, 1, bias=False),
                                   layer.BatchNorm2d(64), node()]
        cin = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [SJBasicBlock(layer, node, cin, planes, stride),
                       SJBasicBlock(layer, node, planes, planes)]
            cin = planes
        body = nn.Sequential(*blocks, layer.AdaptiveAvgPool2d((1, 1)), layer.Flatten(),
                             layer.Linear(512, 10))
        for m in body.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    functional.set_step_mode(body, "m")
    return SJNet(body, bits.t, channels_last)


def sj_reset(net: nn.Module) -> None:
    from spikingjelly.activation_based import functional

    functional.reset_net(net)


# -- timing -------------------------------------------------------------------------------------
class OtherLoad:
    """Cores used by other processes since construction: machine-wide busy time from
    ``/proc/stat`` minus this process's CPU time (the machine is shared)."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        try:
            with open("/proc/stat") as f:
                v = [int(n) for n in f.readline().split()[1:9]]  # user .. steal
            busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        except (OSError, ValueError, IndexError):
            busy = float("nan")
        return busy, time.process_time(), time.perf_counter()

    def cores(self) -> float:
        (b0, p0, w0), (b1, p1, w1) = self.start, self._read()
        return max(0.0, ((b1 - b0) - (p1 - p0)) / max(1e-9, w1 - w0))


class Trainer:
    """One net's training step as the engine runs it: autocast forward and loss on float
    logits, ``zero_grad``, backward, AdamW on the engine's parameter groups."""

    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, *, bf16: bool,
                 channels_last: bool, after_step: Callable[[nn.Module], None] | None = None,
                 ) -> None:
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            x = _channels_last(x)
        self.net, self.x, self.y = net.train(), x, y
        self.bf16, self.after_step = bf16, after_step
        self.opt = torch.optim.AdamW(_param_groups(net, 5e-4), lr=1e-3)

    def step(self) -> float:
        """One step; returns its wall time in seconds."""
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(self.x)
            loss = F.cross_entropy(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.after_step is not None:
            self.after_step(self.net)
        seconds = time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"non-finite loss {float(loss)}")
        return seconds


def measure_case(makers: dict[str, Callable[[], Trainer]], steps: int, warmup: int,
                 profile: bool = False) -> tuple[dict[str, dict], float]:
    """Warm every trainer up, then time them round-robin (one step each per round), so load
    from other processes falls on all of them alike. Returns the median step per trainer and
    the cores other processes used meanwhile."""
    # A fresh compile cache per case, as in a training process: qsnn's fused neuron kernel
    # compiles a few variants per model, and dynamo falls back to eager for a function after
    # ``recompile_limit`` (8) variants in one process.
    torch._dynamo.reset()
    trainers = {}
    for label, make in makers.items():
        torch.manual_seed(0)
        trainers[label] = make()
        t0 = time.perf_counter()
        for _ in range(warmup):
            trainers[label].step()
        print(f"  {label:<20} warm-up {time.perf_counter() - t0:6.1f} s", flush=True)
    load = OtherLoad()
    times: dict[str, list[float]] = {label: [] for label in trainers}
    for _ in range(steps):
        for label, trainer in trainers.items():
            times[label].append(trainer.step())
    others = load.cores()
    results = {}
    for label, ts in times.items():
        med = statistics.median(ts)
        batch = trainers[label].x.shape[0]
        print(f"  {label:<20} {1e3 * med:9.1f} ms/step {batch / med:8.1f} img/s  "
              f"(steps {', '.join(f'{1e3 * t:.0f}' for t in ts)} ms)", flush=True)
        results[label] = {"ms_per_step": 1e3 * med, "images_per_s": batch / med,
                          "step_ms": [round(1e3 * t, 1) for t in ts]}
    print(f"  other processes used {others:.2f} of {os.cpu_count()} cores meanwhile", flush=True)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        for label in ("qsnn", "plain"):
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                trainers[label].step()
            print(f"profile of one {label} step:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    trainers.clear()
    gc.collect()
    return results, round(others, 2)


# -- report -------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(value: float | None, target: float, at_most: bool) -> str:
    """``1.07x ✓``; three decimals where two would hide a miss (``1.204x ✗``)."""
    if value is None:
        return "-"
    met = value <= target if at_most else value >= target
    text = f"{value:.2f}"
    if not met and float(text) == target:
        text = f"{value:.3f}"
    return f"{text}x {'✓' if met else '✗'}"


def markdown(cases: list[dict]) -> str:
    head = ("| model | b_w/b_s/T | qsnn img/s | plain float img/s (same T) | qsnn/plain step "
            "(target ≤ 1.2) | qsnn / (T × plain T=1) | SJ default img/s | qsnn speed-up "
            "(target ≥ 2.5) | SJ bf16+CL img/s | qsnn speed-up (target ≥ 1.3) |")
    rows = [head, "|" + "---|" * 10]
    for c in cases:
        ips, r = c["images_per_s"], c["ratios"]
        rows.append(
            f"| {c['model']} | {c['bits']} | {_fmt(ips['qsnn'])} | {_fmt(ips['plain'])} | "
            f"{_ratio(r['qsnn_vs_plain'], TARGET_PLAIN, True)} | "
            f"{_fmt(r['qsnn_vs_T_times_plain_T1'], '.2f')}x | "
            f"{_fmt(ips.get('spikingjelly_default'))} | "
            f"{_ratio(r['speedup_vs_sj_default'], TARGET_SJ_DEFAULT, False)} | "
            f"{_fmt(ips.get('spikingjelly_same'))} | "
            f"{_ratio(r['speedup_vs_sj_same'], TARGET_SJ_SAME, False)} |"
        )
    return "\n".join(rows)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    ap.add_argument("--bits", default=",".join(ALLOCATIONS), help="comma-separated b_w/b_s/T")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiles)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--spikingjelly", action="store_true",
                    help="also time SpikingJelly 2.0 from benchmarks/.sj")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default, one per core)")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="print a torch.profiler table of one qsnn and one plain step per case")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        ap.error(f"--models: unknown {unknown}; expected some of {list(MODELS)}")
    try:
        allocations = [qsnn.Bits.parse(b.strip()) for b in args.bits.split(",") if b.strip()]
    except ValueError as err:
        ap.error(f"--bits: {err}")
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be at least 1 (the first step compiles)")

    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = _cpu_bf16() and not args.no_bf16
    channels_last = not args.no_channels_last
    load_start = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16={bf16}, "
          f"channels_last={channels_last}, batch {args.batch}, {args.warmup} warm-up + "
          f"{args.steps} timed steps; load average {load_start[0]:.2f} {load_start[1]:.2f} "
          f"{load_start[2]:.2f}", flush=True)
    sj = import_spikingjelly() if args.spikingjelly else None
    if not args.spikingjelly:
        print("note: SpikingJelly columns skipped (pass --spikingjelly)")
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    same = {"bf16": bf16, "channels_last": channels_last}

    def trainer(build: Callable[[], nn.Module], **kw) -> Callable[[], Trainer]:
        return lambda: Trainer(build(), x, y, **kw)

    cases = []
    for model in models:
        for bits in allocations:
            print(f"{model} {bits}:", flush=True)
            load = os.getloadavg()
            makers = {
                "qsnn": trainer(lambda b=bits, m=model: create_model(m, bits=b), **same),
                "plain": trainer(lambda t=bits.t, m=model: make_plain(m, t), **same),
            }
            if bits.t > 1:
                makers["plain_T1"] = trainer(lambda m=model: make_plain(m, 1), **same)
            if sj is not None:
                makers["spikingjelly_default"] = trainer(
                    lambda b=bits, m=model: make_sj(sj, m, b, False),
                    bf16=False, channels_last=False, after_step=sj_reset)
                makers["spikingjelly_same"] = trainer(
                    lambda b=bits, m=model: make_sj(sj, m, b, channels_last),
                    after_step=sj_reset, **same)
            res, others = measure_case(makers, args.steps, args.warmup, args.profile)
            res.setdefault("plain_T1", res["plain"])
            ms = {k: v["ms_per_step"] for k, v in res.items()}
            sj_default, sj_same = ms.get("spikingjelly_default"), ms.get("spikingjelly_same")
            ratios = {
                "qsnn_vs_plain": ms["qsnn"] / ms["plain"],
                "qsnn_vs_T_times_plain_T1": ms["qsnn"] / (bits.t * ms["plain_T1"]),
                "speedup_vs_sj_default": None if sj_default is None else sj_default / ms["qsnn"],
                "speedup_vs_sj_same": None if sj_same is None else sj_same / ms["qsnn"],
            }
            met = {
                "plain": ratios["qsnn_vs_plain"] <= TARGET_PLAIN,
                "sj_default": None if sj_default is None
                else ratios["speedup_vs_sj_default"] >= TARGET_SJ_DEFAULT,
                "sj_same": None if sj_same is None
                else ratios["speedup_vs_sj_same"] >= TARGET_SJ_SAME,
            }
            print(f"  qsnn/plain {ratios['qsnn_vs_plain']:.2f}x (target <= {TARGET_PLAIN}); "
                  f"qsnn/(T x plain T=1) {ratios['qsnn_vs_T_times_plain_T1']:.2f}x"
                  + (f"; {ratios['speedup_vs_sj_default']:.2f}x faster than SJ default "
                     f"(target >= {TARGET_SJ_DEFAULT}), {ratios['speedup_vs_sj_same']:.2f}x "
                     f"than SJ same settings (target >= {TARGET_SJ_SAME})"
                     if sj is not None else ""), flush=True)
            cases.append({
                "model": model, "bits": str(bits), "T": bits.t,
                "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "steps": args.steps, "warmup": args.warmup,
                "load_average_at_start": [round(v, 2) for v in load],
                "other_processes_busy_cores": others,
                "images_per_s": {k: v["images_per_s"] for k, v in res.items()},
                "ms_per_step": ms,
                "step_ms": {k: v["step_ms"] for k, v in res.items()},
                "ratios": ratios, "targets_met": met,
            })

    # Keep cases measured by earlier runs (other --models / --bits) unless re-measured now.
    previous, old = [], {}
    if args.out.exists():
        try:
            old = json.loads(args.out.read_text())
        except (OSError, ValueError):
            old = {}
        if all(old.get(k) == v for k, v in
               (("batch", args.batch), ("bf16", bf16), ("channels_last", channels_last),
                ("threads", torch.get_num_threads()))):
            previous = old.get("cases", [])
    done = {(c["model"], c["bits"]) for c in cases}
    order = {(m, b): i for i, (m, b) in enumerate((m, b) for m in MODELS for b in ALLOCATIONS)}
    merged = [c for c in previous if (c["model"], c["bits"]) not in done] + cases
    merged.sort(key=lambda c: order.get((c["model"], c["bits"]), len(order)))
    result = {
        "benchmark": "train_throughput",
        "batch": args.batch, "image": "3x32x32", "step": "forward + cross-entropy + backward + "
        "AdamW (engine parameter groups), bf16 autocast + channels-last where supported",
        "bf16": bf16, "channels_last": channels_last, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "spikingjelly": sj_version() if sj is not None else old.get("spikingjelly"),
        "cpu": cpu_name(), "cpus": os.cpu_count(),
        "load_average": {"start": [round(v, 2) for v in load_start],
                         "end": [round(v, 2) for v in os.getloadavg()],
                         "note": "of the last run; every case records its own load average and "
                                 "the cores other processes used while it was timed"},
        "targets": {
            "qsnn_vs_plain": f"qsnn step time <= {TARGET_PLAIN} x the plain float model's at "
                             "the same T (at T > 1 the float model runs on the input repeated T "
                             "times, T folded into the batch)",
            "speedup_vs_sj_default": f">= {TARGET_SJ_DEFAULT} (SpikingJelly fp32, contiguous)",
            "speedup_vs_sj_same": f">= {TARGET_SJ_SAME} (SpikingJelly bf16 + channels-last)",
        },
        "notes": [
            "plain: stem conv + BN run once and repeated T times (as qsnn's StaticEncoder); "
            "weights unquantized; SEW ADD is a plain '+'.",
            "SpikingJelly: float weights (no weight quantizer), unrestricted SEW ADD (cnf='ADD'), "
            "the image repeated T times before the stem (its usual idiom); b_s = 1 LIFNode with "
            "ATan, b_s > 1 a LIFNode subclass with the staircase and qsnn's trapezoid surrogate.",
        ],
        "cases": merged,
    }
    write_json_atomic(args.out, result)
    print()
    print(markdown(merged))
    print(f"\nload average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
