"""Energy estimates: the conventional SNN one and a bit-budget one, side by side.

(a) Conventional (used across SNN papers, 45 nm CMOS, Horowitz 2014): a layer fed dense values
    pays ``E_MAC = 4.6 pJ`` per multiply-accumulate; a layer fed spikes pays ``E_AC = 0.9 pJ``
    per spike event (``events = fr * MACs * T_op``), whatever the spike and weight widths.
(b) Bit budget: ``E = e_bit * ACE``, linear in the bit budget as the paper's FPGA measurement
    shows (Sec. 4.4). The paper prints no ``e_bit``; the default below is an assumption derived
    from the same 45 nm table: an int8 multiply (0.2 pJ) plus an int8 add (0.03 pJ) is one
    ``8 x 8``-bit MAC of 64 bit-operations, so ``e_bit = 0.23 / 64 ~= 0.0036 pJ``. Set your own.

Seeing (a) and (b) together shows how (a) flatters SNNs: it charges a 4-bit-spike, 8-bit-weight
synapse the same 0.9 pJ as a binary one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["DEFAULT_ENERGY", "EnergyModel"]


@dataclass(frozen=True)
class EnergyModel:
    """Per-operation energies in picojoules.

    Args:
        e_mac_pj: energy of one dense multiply-accumulate (conventional estimate; 4.6 pJ).
        e_ac_pj: energy of one accumulate per spike event (conventional estimate; 0.9 pJ).
        e_bit_pj: energy of one bit-operation of the bit budget (assumption; see module doc).
        device: a label for where the numbers come from.
    """

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    e_bit_pj: float = 0.23 / 64
    device: str = "45nm CMOS (Horowitz 2014); e_bit assumed = (int8 mult + int8 add) / 64"

    def __post_init__(self) -> None:
        for name in ("e_mac_pj", "e_ac_pj", "e_bit_pj"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"EnergyModel.{name} must be a number >= 0; got {value!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


DEFAULT_ENERGY = EnergyModel()
