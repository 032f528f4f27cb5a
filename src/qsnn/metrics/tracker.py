"""Observe a forward pass: every multiply-accumulate op, its operands' bit widths and sparsity.

``OpTracker`` is a ``TorchDispatchMode``: it sees every aten op the model runs (so functional
matmuls inside attention are seen, not only ``nn.Module`` calls) and keeps, for each tensor, a
small record (``TensorInfo``) propagated from op inputs to op outputs:

- ``max_level``: the largest integer level the tensor can hold (``None``: dense values); its
  width is ``bits = bit_length(max_level)``. Set by modules that declare ``output_bits``
  (neurons, restricted sums: ``2**b - 1``), by the raw input, and propagated by the rules of
  SPEC §5: rearranging and pooling keep it; a sum of two level tensors adds their largest
  levels (two ``b``-bit inputs: ``b + 1`` bits; a running residual stream of ``b_s``-bit spikes
  grows one level range per block, not one bit); anything else is dense.
- ``scale``: the value of one level (``theta``) when known.
- ``steps``: how many time steps the tensor spans (``T_op`` of an op reading it). Set by modules
  that declare ``output_time_steps`` (``StaticEncoder``, ``TimeMean``) and by time-major input;
  a mean or sum over a dimension of that size brings it back to 1.
- ``param``: derived from parameters and constants only (so it is a weight operand).

MACs come from ``torch.utils.flop_counter``'s registered formulas (FLOPs / 2), not from
per-layer formulas written here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry
from torch.utils.weak import WeakTensorKeyDictionary

from .._progress import Progress
from ..bitwidth import declared_level_step, declared_output_levels, declared_time_steps

log = logging.getLogger(__name__)

__all__ = [
    "OpRecord",
    "OpTracker",
    "TensorInfo",
    "example_shape",
    "infer_levels",
    "level_bits",
    "raw_levels",
    "run_tracked",
]

aten = torch.ops.aten

# Ops whose output holds (a rearrangement or subset or average of) the input's levels.
_KEEP = {
    "view",
    "_unsafe_view",
    "reshape",
    "_reshape_alias",
    "permute",
    "transpose",
    "t",
    "expand",
    "expand_as",
    "view_as",
    "clone",
    "contiguous",
    "_to_copy",
    "to",
    "detach",
    "alias",
    "lift_fresh",
    "squeeze",
    "unsqueeze",
    "flatten",
    "unflatten",
    "select",
    "slice",
    "index",
    "index_select",
    "as_strided",
    "split",
    "split_with_sizes",
    "chunk",
    "unbind",
    "movedim",
    "narrow",
    "repeat",
    "constant_pad_nd",
    "flip",
    "roll",
    "gather",
    "cat",
    "stack",
    "copy",
    "_to_dim_order_copy",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool3d",
    "mean",
}
# Multiply-accumulate ops: (index of the left operand, index of the right operand).
_MAC_OPERANDS = {
    "convolution": (0, 1),
    "_convolution": (0, 1),
    "mm": (0, 1),
    "bmm": (0, 1),
    "addmm": (1, 2),
    "baddbmm": (1, 2),
}
_CONV = {"convolution", "_convolution"}


def level_bits(max_level: int) -> int:
    """Bits needed for unsigned levels ``0..max_level`` (at least 1)."""
    return max(1, int(max_level).bit_length())


@dataclass(frozen=True)
class TensorInfo:
    """What the tracker knows about one tensor (see module docstring)."""

    @property
    def bits(self) -> int | None:
        return None if self.max_level is None else level_bits(self.max_level)

    max_level: int | None = None
    scale: float | None = None
    steps: int = 1
    param: bool = False
    raw: bool = False


def infer_levels(
    x: Tensor, max_bits: int = 16, allow_signed: bool = False
) -> tuple[int, float] | None:
    """``(bits, scale)`` when ``x`` holds non-negative integer multiples of its smallest
    non-zero value (spikes of a foreign model), else ``None``. An all-zero tensor is 1-bit
    with scale 1. With ``allow_signed``, signed spikes (ternary ``{-1, 0, 1}``, say) are
    levels too, with a sign bit on top of their magnitude's bits: ``{-1, 0, 1}`` is 2 bits."""
    if x.is_complex() or x.dtype == torch.bool or x.numel() == 0:
        return None
    xf = x.detach().float()
    signed = float(xf.min()) < 0
    if signed and not allow_signed:
        return None
    if signed:
        xf = xf.abs()
    nonzero = xf[xf != 0]
    if nonzero.numel() == 0:
        return 1, 1.0
    scale = float(nonzero.min())
    ratio = nonzero / scale
    top = float(ratio.max())
    limit = 2 ** (max_bits - 1 if signed else max_bits) - 1 + 0.5
    if top > limit or float((ratio - ratio.round()).abs().max()) > 1e-3:
        return None
    return level_bits(round(top)) + int(signed), scale


#: Elements per chunk of ``OpRecord.observe`` (its copies: about 24 bytes per element).
_CHUNK = 1 << 22

_POPCOUNT_8 = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _popcount(levels: Tensor) -> int:
    """Total number of 1-bits of non-negative int32 ``levels`` below ``2**16``."""
    table = _POPCOUNT_8.to(levels.device)
    ones = int(table[levels & 255].sum())
    high = levels >> 8
    if bool(high.any()):
        ones += int(table[high & 255].sum())
    return ones


@dataclass
class OpRecord:
    """One multiply-accumulate op seen in the forward pass (one call of one op)."""

    name: str
    kind: str  # "conv", "linear" or "matmul" (a product of two activations)
    macs_total: float  # over the whole batch and every step it ran
    steps: int  # T_op
    weight_module: nn.Module | None
    b_in: int  # width of the streamed (left / input) operand; 16 when dense
    b_in_b: int | None  # width of the other activation operand of a matmul
    spiking_input: bool  # input holds levels from a spiking module (for the SOP energy)
    raw_input: bool
    nonzero: float = 0.0
    numel: float = 0.0
    ones: float = 0.0
    bit_slots: float = 0.0
    density_known: bool = True
    shapes: tuple = field(default_factory=tuple)

    def observe(self, x: Tensor, info: TensorInfo, bits: int | None, scale: float | None) -> None:
        """Accumulate the non-zero count and the 1-bit count of the streamed operand ``x``.

        The bit-planes are counted in chunks of at most ``_CHUNK`` elements along the first
        dimension, so the float and integer copies they need stay small at any ``T``."""
        n = x.numel()
        nz = int(torch.count_nonzero(x))
        self.nonzero += nz
        self.numel += n
        # Bit-planes of signed levels (sign + magnitude) are not counted: density falls back.
        unsigned = bool(n) and float(x.min()) >= 0
        if bits is not None and bits <= 16 and scale is not None and scale > 0 and unsigned:
            ones = 0
            rows = x.reshape(1, -1) if x.dim() == 0 else x
            step = max(1, _CHUNK // max(1, rows[0].numel()))
            for start in range(0, rows.shape[0], step):
                ratio = rows[start : start + step].detach().float() / scale  # levels <= 65535
                levels = torch.round(ratio)  # are exact in float32
                # Bit-planes exist only for whole levels; an averaged input (average pooling)
                # has none, and its density falls back to the firing rate.
                if float((ratio - levels).abs().max()) >= 1e-3:
                    break
                ones += _popcount(levels.clamp_(0, 2**bits - 1).to(torch.int32))
            else:
                self.ones += ones
                self.bit_slots += n * bits
                return
        self.density_known = False


def _popcount_any(levels: Tensor) -> int:
    """1-bits of non-negative integer ``levels`` of any width below ``2**32``, in chunks."""
    flat = levels.reshape(-1).to(torch.int64)
    ones = 0
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK]
        while bool(part.any()):
            ones += int(_POPCOUNT_8.to(part.device)[part & 255].sum())
            part = part >> 8
    return ones


def raw_levels(x: Tensor, bits: int, normalization: tuple | None = None) -> Tensor | None:
    """The integer levels ``k`` in ``0..2**bits - 1`` that the raw input ``x`` encodes, or
    ``None`` when they cannot be read off it. ``normalization = (mean, std)`` per channel
    (dimension 1) says ``x = (k / (2**bits - 1) - mean) / std`` (qsnn's image batches);
    without it ``x`` is taken as ``k`` itself when it is integer-valued (counts), else as
    ``k / (2**bits - 1)`` (``ToTensor`` images) when its values fit that exactly."""
    if x.is_complex() or x.numel() == 0 or bits > 31:
        return None
    top = 2**bits - 1
    xf = x.detach().double()
    if normalization is not None:
        mean, std = (
            torch.as_tensor(v, dtype=torch.float64, device=x.device) for v in normalization
        )
        if x.dim() < 2 or mean.numel() not in (1, x.shape[1]):
            return None
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = (xf * std.reshape(shape) + mean.reshape(shape)) * top
    candidates = [xf] if normalization is not None else [xf, xf * top]  # counts first
    for values in candidates:
        levels = values.round()
        if (
            float((values - levels).abs().max()) < 1e-3
            and float(levels.min()) >= 0
            and float(levels.max()) <= top
        ):
            return levels.to(torch.int64)
    return None


#: Layers whose completion marks progress through a trace.
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class OpTracker(TorchDispatchMode):
    """Dispatch mode that records ``OpRecord``s; module hooks give names and declared widths."""

    def __init__(
        self,
        model: nn.Module,
        input_bits: int | None,
        measure: bool = True,
        input_normalization: tuple | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__()
        self.input_normalization = input_normalization
        #: (1-bits, bit slots, elements) of the raw input's integer levels, when they are known.
        self.raw_planes: tuple[int, int, int] | None = None
        self.info = WeakTensorKeyDictionary()
        self.records: list[OpRecord] = []
        self.measure = measure
        self.input_bits = input_bits
        self._stack: list[str] = []
        self._names = {m: n for n, m in model.named_modules()}
        self._modules = {n: m for n, m in model.named_modules()}
        self._calls: dict[str, int] = {}
        for tensor in list(model.parameters()) + list(model.buffers()):
            self.info[tensor] = TensorInfo(param=True)
        self._handles = []
        for module in model.modules():
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        # Progress of a long trace (a large model or T on a slow machine): weight-layer calls
        # finished, one line every few seconds when ``progress`` is given; no bar, as the trace
        # is nested in the caller's loop.
        self._weight_layers = sum(isinstance(m, _WEIGHT_LAYERS) for m in model.modules())
        self._progress = (None if progress is None or not progress.enabled
                          else progress.counter(None, "weight-layer calls", "traced", draw=False))

    # -- inputs and module hooks ---------------------------------------------------------------
    def mark_input(self, x: Tensor, steps: int) -> None:
        """Register the raw model input: ``input_bits`` wide (inferred when None), ``steps``."""
        if self.input_bits is None:
            found = infer_levels(x)  # event counts: the bits of the largest count
            bits, scale = found if found is not None else (16, None)
        else:
            bits, scale = self.input_bits, None
        self.info[x] = TensorInfo(max_level=2**bits - 1, scale=scale, steps=steps, raw=True)
        if self.measure:
            levels = raw_levels(x, bits, self.input_normalization)
            if levels is not None:
                self.raw_planes = (_popcount_any(levels), levels.numel() * bits, levels.numel())

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _report_progress(self, name: str) -> None:
        if self._progress is not None:
            self._progress.advance(detail=lambda: f"the model has {self._weight_layers} weight "
                                   f"layers; now in {name}")  # fmt: skip

    def _enter(self, module: nn.Module, args) -> None:
        self._stack.append(self._names.get(module, type(module).__name__))

    def _leave(self, module: nn.Module, args, output) -> None:
        if self._stack:
            self._stack.pop()
        if isinstance(module, _WEIGHT_LAYERS):
            self._report_progress(self._names.get(module, type(module).__name__))
        if not isinstance(output, Tensor):
            if isinstance(output, (tuple, list)):  # (spikes, membrane) of snnTorch-style neurons
                for item in output:
                    if isinstance(item, Tensor):
                        self._recognise_spikes(module, item)
            return
        info = self.get(output)
        bits = declared_output_levels(module)
        if bits is not None:
            scale = declared_level_step(module)
            info = replace(info, max_level=2**bits - 1, scale=scale, param=False, raw=False)
        else:
            info = self._recognise_spikes(module, output)
        steps = declared_time_steps(module)
        if steps is not None:
            info = replace(info, steps=steps)
        self.info[output] = info

    def _recognise_spikes(self, module: nn.Module, output: Tensor) -> TensorInfo:
        """The info of a leaf module's ``output``, with its levels when it holds spikes of a
        foreign neuron (integer multiples of one scale, signed ones included, ``infer_levels``;
        not the output of a layer with weights). Recognised here,
        where the neuron emits them, the width survives pooling as SPEC §5 says (an average
        of binary spikes read at the next layer would look like 3-bit levels)."""
        info = self.get(output)
        if info.max_level is not None or info.param or info.raw or next(module.children(), None):
            return info
        if hasattr(module, "weight"):
            return info  # a layer's output current, not spikes
        found = infer_levels(output, allow_signed=True)
        if found is None:
            return info
        info = replace(info, max_level=2 ** found[0] - 1, scale=found[1])
        self.info[output] = info
        return info

    def get(self, x: Tensor) -> TensorInfo:
        return self.info.get(x, TensorInfo(param=True))

    # -- every op ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, Tensor)]
        infos = [self.get(t) for t in tensors]
        if name in _MAC_OPERANDS:
            self._record(func, name, args, kwargs, out)
        self._propagate(name, args, tensors, infos, out)
        return out

    def _propagate(self, name, args, tensors, infos, out) -> None:
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, Tensor)]
        if not outs:
            return
        param = all(i.param for i in infos)
        steps = max((i.steps for i in infos), default=1)
        acts = [i for i in infos if not i.param]
        level, scale, raw = None, None, False
        if name in _KEEP and acts and all(i.max_level is not None for i in acts):
            level = max(i.max_level for i in acts)
            scales = {i.scale for i in acts}
            scale = scales.pop() if len(scales) == 1 else None
            # A reshape, view, cast or pool of the raw input is still the raw input: its first
            # layer is a dense MAC layer, not one fed by spikes.
            raw = all(i.raw for i in acts)
        elif name == "add" and len(tensors) == 2 and len(acts) == 2 and not _has_alpha(args):
            a, b = acts
            if a.max_level is not None and b.max_level is not None and a.scale == b.scale:
                level, scale = a.max_level + b.max_level, a.scale
        elif name in ("mul", "div") and len(acts) == 1 and acts[0].max_level is not None:
            other = args[1] if tensors and args[0] is tensors[0] else args[0]
            if isinstance(other, (int, float)) and other > 0:
                level, raw = acts[0].max_level, acts[0].raw
                if acts[0].scale is not None:
                    scale = acts[0].scale * other if name == "mul" else acts[0].scale / other
        if name in ("mean", "sum") and steps > 1 and tensors and len(args) > 1:
            # Only a reduction over the leading (time) dimension alone ends the time axis: a
            # spatial mean inside FoldTime may reduce a dimension that happens to have size T.
            dims = [args[1]] if isinstance(args[1], int) else list(args[1] or [])
            src = tensors[0]
            if [d % src.dim() for d in dims] == [0] and src.shape[0] == steps:
                steps = 1
        if name == "sum":
            level, scale, raw = None, None, False
        info = TensorInfo(max_level=level, scale=scale, steps=steps, param=param, raw=raw)
        for o in outs:
            self.info[o] = info

    def _record(self, func, name, args, kwargs, out) -> None:
        left_i, right_i = _MAC_OPERANDS[name]
        left, right = args[left_i], args[right_i]
        li, ri = self.get(left), self.get(right)
        if li.param and ri.param:
            return  # a computation on weights alone (e.g. a reparametrisation), not a layer
        macs = flop_registry[func.overloadpacket](*args, **kwargs, out_val=out) / 2
        owner = self._stack[-1] if self._stack else ""
        module = self._modules.get(owner)
        if li.param != ri.param:
            act, act_info = (right, ri) if li.param else (left, li)
            kind = "conv" if name in _CONV else "linear"
            weight_module, b_in_b = module, None
            streamed, other = (act, act_info), None
        else:
            kind, weight_module = "matmul", None
            streamed, other = (left, li), (right, ri)
        bits, scale, spiking = self._width(*streamed)
        b_in_b = self._width(*other)[0] if other is not None else None
        steps = max(streamed[1].steps, other[1].steps if other else 1)
        if kind == "matmul":
            key = f"{owner}.matmul" if owner else "matmul"
        else:
            key = owner or kind
        count = self._calls.get(key, 0)
        self._calls[key] = count + 1
        label = key if count == 0 else f"{key}#{count}"
        record = OpRecord(
            name=label,
            kind=kind,
            macs_total=macs,
            steps=steps,
            weight_module=weight_module,
            b_in=bits if bits is not None else 16,
            b_in_b=b_in_b,
            spiking_input=spiking,
            raw_input=streamed[1].raw,
            shapes=(tuple(left.shape), tuple(right.shape)),
        )
        if self.measure:
            planes = self.raw_planes
            if streamed[1].raw and planes is not None and streamed[0].numel() == planes[2]:
                # The raw input (or a view of it): bit-planes of its integer pixels.
                record.observe(streamed[0], streamed[1], None, None)
                record.ones += planes[0]
                record.bit_slots += planes[1]
                record.density_known = True
            else:
                record.observe(streamed[0], streamed[1], bits, scale)
        self.records.append(record)

    def _width(self, x: Tensor, info: TensorInfo) -> tuple[int | None, float | None, bool]:
        """(bits, scale, is_spiking) of an activation operand; 16 when dense."""
        if info.bits is not None:
            return info.bits, info.scale, not info.raw
        found = infer_levels(x)
        if found is not None:
            return found[0], found[1], True
        return 16, None, False


def _has_alpha(args) -> bool:
    return len(args) > 2 and args[2] not in (1, 1.0)


def example_shape(x: object, time_major: bool, who: str = "profile") -> tuple[int, int]:
    """``(steps, batch)`` of an example input ``[B, ...]`` or, time-major, ``[T, B, ...]``
    (static: 1 step); a ``ValueError`` when it is not a tensor or holds no sample."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{who} needs an example input tensor; got {type(x).__name__}")
    need = 2 if time_major else 1
    if x.dim() < need:
        layout = "[T, B, ...]" if time_major else "[B, ...]"
        raise ValueError(f"{who}: the example input must be {layout}; got {tuple(x.shape)}")
    steps, batch = (x.shape[0], x.shape[1]) if time_major else (1, x.shape[0])
    if batch < 1 or steps < 1:
        what = "batch size" if batch < 1 else "number of time steps"
        raise ValueError(
            f"{who}: the example input {tuple(x.shape)} has {what} 0; it needs at least one "
            f"sample{' and one step' if time_major else ''}"
        )
    return steps, batch


def _input_error(
    model: nn.Module, x: Tensor, time_major: bool, err: Exception
) -> ValueError | None:
    """The one-line error for an input the model cannot take, or none when ``x`` has the
    model's declared ``input_size`` (then the failure is not the input's)."""
    expected = getattr(model, "input_size", None)
    sample = tuple(x.shape[2:] if time_major else x.shape[1:])
    if not isinstance(expected, tuple) or sample == tuple(expected):
        return None
    cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    layout = (
        f"[T, B, {', '.join(map(str, expected))}]"
        if time_major
        else f"[B, {', '.join(map(str, expected))}]"
    )
    return ValueError(
        f"{type(model).__name__} cannot run on input {tuple(x.shape)}: it was built for samples "
        f"of shape {tuple(expected)} (C, H, W), input {layout} ({cause})"
    )


def run_tracked(
    model: nn.Module,
    x: Tensor,
    steps: int,
    input_bits: int | None,
    measure: bool = True,
    call: Callable[[nn.Module, Tensor], object] | None = None,
    *,
    time_major: bool = False,
    input_normalization: tuple | None = None,
    progress: Progress | None = None,
) -> list[OpRecord]:
    """Run ``model(x)`` under an ``OpTracker`` and return its op records.

    A model that fails on an input whose sample shape differs from its declared
    ``input_size`` (an image smaller than its downsampling allows, a head built for another
    size) raises a ``ValueError`` that says what the model was built for. ``progress``: a
    line every few seconds of a long trace (none without it).
    """
    tracker = OpTracker(model, input_bits, measure, input_normalization, progress)
    try:
        with tracker:
            tracker.mark_input(x, steps)
            (call or (lambda m, inp: m(inp)))(model, x)
    except RuntimeError as err:
        mismatch = _input_error(model, x, time_major, err)
        if mismatch is None:
            raise
        raise mismatch from err
    finally:
        tracker.close()
    return tracker.records
