"""Loaders for the papers' datasets in their published layouts (nothing is downloaded)."""

from .actions import NTU60, NTU120, NTURGBD, NWUCLA, UWA3DII
from .antispoof import CasiaCeFA, CasiaSurf, parse_surf_list
from .base import FileListDataset, FileSample, in_val_subset, list_frames
from .io import read_depth, read_flow, read_gray, read_hha, read_image
from .nyud import NYUDObjects
from .rawframes import HMDB51, UCF101, RawFrames

__all__ = [
    "HMDB51",
    "NTU60",
    "NTU120",
    "NTURGBD",
    "NWUCLA",
    "UCF101",
    "UWA3DII",
    "CasiaCeFA",
    "CasiaSurf",
    "FileListDataset",
    "FileSample",
    "NYUDObjects",
    "RawFrames",
    "in_val_subset",
    "list_frames",
    "parse_surf_list",
    "read_depth",
    "read_flow",
    "read_gray",
    "read_hha",
    "read_image",
]
