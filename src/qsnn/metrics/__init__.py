"""Fair cost accounting (SPEC §5): ``profile`` -> ``Profile`` with per-layer figures."""

from .energy import DEFAULT_ENERGY, EnergyModel
from .profile import LayerProfile, Profile, profile
from .tracker import infer_levels

__all__ = ["DEFAULT_ENERGY", "EnergyModel", "LayerProfile", "Profile", "infer_levels", "profile"]
