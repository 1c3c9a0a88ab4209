"""Small shared helpers of the framework: seeding, devices, distributed helpers, file I/O."""

from .device import resolve_device
from .distributed import DistInfo, all_gather_with_grad, dist_info, is_main_process
from .io import atomic_torch_save, read_json, write_json
from .seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "atomic_torch_save",
    "dist_info",
    "get_rng_state",
    "is_main_process",
    "read_json",
    "resolve_device",
    "seed_everything",
    "set_rng_state",
    "write_json",
]
