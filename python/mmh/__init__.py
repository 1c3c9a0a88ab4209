"""mmh: privileged-modality learning — train with every modality, deploy with the ones you have."""

__version__ = "0.1.0"
