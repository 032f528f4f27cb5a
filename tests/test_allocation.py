"""Acceptance tests for bit allocations (SPEC §1): ``Bits``, ``allocations``, ``BitsPolicy``,
``apply_bits``.

Expected values are worked out by hand or by an independent enumeration written here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch.nn as nn

import qsnn
from qsnn import Bits, BitsPolicy, FoldTime, LayerBits, QuantLinear, SpikeNeuron, allocations

# --------------------------------------------------------------------------------------------
# Bits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "s", "t", "budget", "w_eff", "levels"),
    [
        (4, 2, 2, 16, 4, 3),  # the paper's "4/2/2": 4*2*2 = 16, L = 2**2 - 1 = 3
        (1, 1, 4, 4, 1, 1),  # binary LIF, binary weights, T = 4
        (2, 2, 2, 8, 2, 3),
        (8, 16, 1, 128, 8, 65535),  # 16-bit spikes (paper Table 3): L = 2**16 - 1
        (32, 1, 4, 64, 16, 1),  # float weights count as 16: 16*1*4 = 64 (SPEC §1)
        (16, 1, 4, 64, 16, 1),
        (32, 4, 1, 64, 16, 15),
        (3, 3, 3, 27, 3, 7),
    ],
)
def test_bits_budget_w_eff_levels(w, s, t, budget, w_eff, levels):
    b = Bits(w, s, t)
    assert (b.w, b.s, b.t) == (w, s, t)
    assert b.budget == budget
    assert b.w_eff == w_eff
    assert b.levels == levels


def test_float_weight_budget_is_16_bits():
    """SPEC §1 verbatim: ``Bits(32, 1, 4).budget == 64``."""
    assert Bits(32, 1, 4).budget == 64
    assert Bits(32, 1, 4).budget == Bits(16, 1, 4).budget


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4/2/2", Bits(4, 2, 2)), ("1/1/4", Bits(1, 1, 4)), ("32/1/4", Bits(32, 1, 4)),
     ("8/16/1", Bits(8, 16, 1)), ("2/2/2", Bits(2, 2, 2))],
)
def test_bits_parse_and_str_round_trip(text, expected):
    b = Bits.parse(text)
    assert b == expected
    assert str(b) == text
    assert Bits.parse(str(b)) == b


def test_bits_is_frozen_and_hashable():
    b = Bits(4, 2, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.w = 2  # type: ignore[misc]
    assert hash(b) == hash(Bits(4, 2, 2))
    assert len({Bits(4, 2, 2), Bits(4, 2, 2), Bits(2, 4, 2)}) == 2


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 1, 1), "Bits.w"),
        ((9, 1, 1), "Bits.w"),
        ((15, 1, 1), "Bits.w"),
        ((17, 1, 1), "Bits.w"),
        ((31, 1, 1), "Bits.w"),
        ((33, 1, 1), "Bits.w"),
        ((64, 1, 1), "Bits.w"),
        ((-4, 1, 1), "Bits.w"),
        ((4.0, 1, 1), "Bits.w"),
        ((True, 1, 1), "Bits.w"),
        (("4", 1, 1), "Bits.w"),
        ((4, 0, 1), "Bits.s"),
        ((4, 17, 1), "Bits.s"),
        ((4, -1, 1), "Bits.s"),
        ((4, 2.0, 1), "Bits.s"),
        ((4, True, 1), "Bits.s"),
        ((4, 2, 0), "Bits.t"),
        ((4, 2, -3), "Bits.t"),
        ((4, 2, 1.5), "Bits.t"),
        ((4, 2, True), "Bits.t"),
        ((4, 2, None), "Bits.t"),
    ],
)
def test_bits_invalid_raises_value_error_naming_field(args, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Bits(*args)


@pytest.mark.parametrize("w", [1, 2, 3, 4, 5, 6, 7, 8, 16, 32])
@pytest.mark.parametrize("s", [1, 16])
def test_bits_every_valid_weight_width_accepted(w, s):
    assert Bits(w, s, 1).w == w


@pytest.mark.parametrize(
    "text", ["", "4/2", "4/2/2/1", "a/b/c", "4-2-2", "4/2/x", "4//2", "4.5/2/2", "/", "4 2 2"]
)
def test_bits_parse_bad_strings(text):
    with pytest.raises(ValueError):
        Bits.parse(text)


@pytest.mark.parametrize(("text", "field"), [("9/2/2", "Bits.w"), ("4/0/2", "Bits.s"),
                                             ("4/2/0", "Bits.t"), ("4/17/1", "Bits.s")])
def test_bits_parse_out_of_range_names_field(text, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Bits.parse(text)


# --------------------------------------------------------------------------------------------
# allocations
# --------------------------------------------------------------------------------------------


def _is_pow2(v: int) -> bool:
    return v >= 1 and (v & (v - 1)) == 0


def _reference_allocations(budget, w=None, s=None, t=None, powers_of_two=True):
    """Independent enumeration: b_w in 1..8 or 16 (float, once), b_s in 1..16, T = rest."""
    found = []
    for bw in [1, 2, 3, 4, 5, 6, 7, 8, 16]:
        for bs in range(1, 17):
            if budget % (bw * bs):
                continue
            bt = budget // (bw * bs)
            ok = True
            for value, fixed in ((bw, w), (bs, s), (bt, t)):
                if fixed is not None:
                    ok &= value == fixed
                elif powers_of_two:
                    ok &= _is_pow2(value)
            if ok:
                found.append((bw, bs, bt))
    return sorted(found)


def test_allocations_budget_16_by_hand():
    """Budget 16 on the power-of-two grid, written out by hand (sorted by (w, s, t)):

    w=1: 1/1/16, 1/2/8, 1/4/4, 1/8/2, 1/16/1
    w=2: 2/1/8, 2/2/4, 2/4/2, 2/8/1
    w=4: 4/1/4, 4/2/2, 4/4/1
    w=8: 8/1/2, 8/2/1
    w=16 (float): 16/1/1
    """
    expected = ["1/1/16", "1/2/8", "1/4/4", "1/8/2", "1/16/1", "2/1/8", "2/2/4", "2/4/2",
                "2/8/1", "4/1/4", "4/2/2", "4/4/1", "8/1/2", "8/2/1", "16/1/1"]
    assert [str(b) for b in allocations(16)] == expected


@pytest.mark.parametrize("budget", [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128])
@pytest.mark.parametrize("powers_of_two", [True, False])
def test_allocations_match_independent_enumeration(budget, powers_of_two):
    ref = _reference_allocations(budget, powers_of_two=powers_of_two)
    if not ref:
        with pytest.raises(ValueError):
            allocations(budget, powers_of_two=powers_of_two)
        return
    got = allocations(budget, powers_of_two=powers_of_two)
    assert all(isinstance(b, Bits) for b in got)
    assert [(b.w, b.s, b.t) for b in got] == ref
    # product exactly the budget, sorted by (w, s, t), no duplicates
    assert all(b.w_eff * b.s * b.t == budget and b.budget == budget for b in got)
    keys = [(b.w, b.s, b.t) for b in got]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("budget", [16, 32, 64, 256])
def test_allocations_float_weights_appear_once_as_16(budget):
    got = allocations(budget)
    assert not any(b.w == 32 for b in got)
    floats = [b for b in got if b.w >= 16]
    assert all(b.w == 16 for b in floats)
    # each (s, t) float combination appears exactly once
    st = [(b.s, b.t) for b in floats]
    assert len(st) == len(set(st))
    assert (1, budget // 16) in st


@pytest.mark.parametrize(
    ("budget", "fixed"),
    [(16, {"w": 4}), (16, {"s": 2}), (16, {"t": 2}), (64, {"w": 2, "t": 4}),
     (24, {"w": 3}), (48, {"t": 3}), (32, {"w": 16})],
)
def test_allocations_with_fixed_fields(budget, fixed):
    ref = _reference_allocations(budget, **fixed)
    got = allocations(budget, **fixed)
    assert [(b.w, b.s, b.t) for b in got] == ref
    for b in got:
        for k, v in fixed.items():
            assert getattr(b, k) == v


def test_allocations_fixed_w4_budget16_by_hand():
    """w = 4, budget 16: s*t = 4 -> 4/1/4, 4/2/2, 4/4/1."""
    assert allocations(16, w=4) == [Bits(4, 1, 4), Bits(4, 2, 2), Bits(4, 4, 1)]


def test_allocations_non_power_of_two_grid():
    """Budget 3 has no power-of-two allocation; with integers: 1/1/3, 1/3/1, 3/1/1."""
    with pytest.raises(ValueError):
        allocations(3)
    assert allocations(3, powers_of_two=False) == [Bits(1, 1, 3), Bits(1, 3, 1), Bits(3, 1, 1)]


@pytest.mark.parametrize(
    ("budget", "kwargs"),
    [(7, {"w": 2}), (5, {}), (16, {"w": 3}), (16, {"t": 32}), (3, {"s": 2})],
)
def test_allocations_empty_is_value_error(budget, kwargs):
    with pytest.raises(ValueError):
        allocations(budget, **kwargs)


# --------------------------------------------------------------------------------------------
# BitsPolicy / apply_bits
# --------------------------------------------------------------------------------------------


def test_policy_default_and_overrides():
    policy = BitsPolicy(
        "4/2/2",
        {"stem*": 8, "stem.conv": 3, "head": {"w": 6}, "blocks.*.neuron": "5/3", "mid": {"s": 4}},
    )
    assert policy.for_layer("blocks.0.conv") == LayerBits(4, 2)  # default
    assert policy.for_layer("stem.conv") == LayerBits(8, 2)  # first match wins ("stem*")
    assert policy.for_layer("stem") == LayerBits(8, 2)
    assert policy.for_layer("head") == LayerBits(6, 2)
    assert policy.for_layer("blocks.3.neuron") == LayerBits(5, 3)
    assert policy.for_layer("mid") == LayerBits(4, 4)


def test_policy_accepts_bits_default():
    policy = BitsPolicy(Bits(2, 2, 2))
    assert policy.for_layer("anything") == LayerBits(2, 2)


@pytest.mark.parametrize("value", [9, 0, "9/2", "4/0", {"w": 12}, {"s": 17}, {"x": 1}, 2.5])
def test_policy_bad_override_value(value):
    with pytest.raises(ValueError):
        BitsPolicy("4/2/2", {"head": value})


def _tiny_model():
    return nn.Sequential(
        FoldTime(QuantLinear(4, 6, bits_w=8)),
        SpikeNeuron(1),
        FoldTime(QuantLinear(6, 5, bits_w=8)),
        SpikeNeuron(1),
        FoldTime(QuantLinear(5, 2, bits_w=8)),
    )


def test_apply_bits_sets_every_layer():
    model = _tiny_model()
    qsnn.apply_bits(model, "2/3/2")
    assert [model[i].module.bits_w for i in (0, 2, 4)] == [2, 2, 2]
    assert [model[i].bits_s for i in (1, 3)] == [3, 3]


def test_apply_bits_with_overrides_by_qualified_name():
    model = _tiny_model()
    qsnn.apply_bits(model, Bits(2, 2, 4), {"0.module": 8, "4.*": 8, "3": "4/4"})
    assert model[0].module.bits_w == 8
    assert model[2].module.bits_w == 2
    assert model[4].module.bits_w == 8
    assert model[1].bits_s == 2
    assert model[3].bits_s == 4


def test_apply_bits_float_weights():
    model = _tiny_model()
    qsnn.apply_bits(model, "32/1/4")
    assert model[0].module.bits_w == 32


def test_apply_bits_strict_unmatched_pattern():
    model = _tiny_model()
    with pytest.raises(ValueError):
        qsnn.apply_bits(model, "2/2/2", {"stem.*": 8})
    # non-strict: ignored
    qsnn.apply_bits(model, "2/2/2", {"stem.*": 8}, strict=False)
    assert model[0].module.bits_w == 2


def test_apply_bits_override_with_other_t_rejected():
    model = _tiny_model()
    with pytest.raises(ValueError):
        qsnn.apply_bits(model, "2/2/2", {"0.module": Bits(8, 2, 4)})
    with pytest.raises(ValueError):
        qsnn.apply_bits(model, "2/2/2", {"0.module": "8/2/4"})
    # same T is fine
    qsnn.apply_bits(model, "2/2/2", {"0.module": Bits(8, 4, 2)})
    assert model[0].module.bits_w == 8


def test_apply_bits_bad_bits_string():
    with pytest.raises(ValueError):
        qsnn.apply_bits(_tiny_model(), "2/2")
