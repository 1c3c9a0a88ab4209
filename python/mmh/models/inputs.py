"""Input checking and reshaping shared by every model of the zoo.

Models read a mapping ``{modality: tensor}``; these helpers turn one entry into the layout a backbone wants
and raise a clear error (naming the modality) for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

#: channels assumed for the common modalities when ``in_channels`` does not name them.
DEFAULT_CHANNELS: dict[str, int] = {"rgb": 3, "depth": 1, "ir": 1, "flow": 2}


def resolve_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """Validate a modality list: non-empty, strings, no duplicates."""
    if isinstance(modalities, str):
        raise TypeError(
            f"modalities must be a sequence of names, got the string {modalities!r}; write ({modalities!r},)"
        )
    mods = tuple(modalities)
    if not mods:
        raise ValueError("modalities must name at least one modality")
    for m in mods:
        if not isinstance(m, str) or not m:
            raise TypeError(f"modalities must be non-empty strings, got {m!r}")
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities contains duplicates: {mods}")
    return mods


def resolve_in_channels(
    modalities: Sequence[str],
    in_channels: Mapping[str, int] | None,
    defaults: Mapping[str, int] | None = DEFAULT_CHANNELS,
) -> dict[str, int]:
    """Channels (or vector length) per modality: ``in_channels`` first, then ``defaults``.

    Raises ValueError naming a modality that neither gives, or a non-positive count.
    """
    given = dict(in_channels or {})
    out: dict[str, int] = {}
    for m in modalities:
        if m in given:
            c = given[m]
        elif defaults is not None and m in defaults:
            c = defaults[m]
        else:
            raise ValueError(f"in_channels has no entry for modality {m!r}; pass in_channels={{{m!r}: ...}}")
        if isinstance(c, bool) or not isinstance(c, int) or c <= 0:
            raise ValueError(f"in_channels[{m!r}] must be a positive int, got {c!r}")
        out[m] = c
    return out


@dataclass(frozen=True)
class InputSpec:
    """What a model expects under one modality key.

    ``kind="image"``: (B, C, H, W), or a clip (B, T, C, H, W) with ``T == num_frames`` folded time-into-channels to
    (B, T*C, H, W). ``kind="vector"``: (B, D), returned as a (B, D, 1, 1) map so vector models share the
    convolutional code path (a 1x1 convolution is a linear layer).
    """

    kind: str
    channels: int
    num_frames: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("image", "vector"):
            raise ValueError(f"InputSpec.kind must be 'image' or 'vector', got {self.kind!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")

    @property
    def folded_channels(self) -> int:
        """Channels of the tensor handed to the stem (time folded into channels)."""
        return self.channels * (self.num_frames if self.kind == "image" else 1)


def check_num_frames(num_frames: object, minimum: int = 1, model: str = "the model") -> int | None:
    """``num_frames`` (the data's clip length, which the runner passes to every model fed clips) checked: None or an
    int >= ``minimum``; ValueError naming ``model`` otherwise. Models that take clips of any length accept it so that
    a config can train them on clip data."""
    bad_type = isinstance(num_frames, bool) or not isinstance(num_frames, int)
    if num_frames is not None and (bad_type or num_frames < minimum):  # type: ignore[operator]
        raise ValueError(
            f"num_frames (the data's clip length) must be an int >= {minimum} for {model}, got {num_frames!r}"
        )
    return num_frames


def image_specs(
    modalities: tuple[str, ...], in_channels: Mapping[str, int] | None, num_frames: int
) -> dict[str, InputSpec]:
    """InputSpec per modality for image/clip models (time folded into channels)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    chans = resolve_in_channels(modalities, in_channels)
    return {m: InputSpec("image", chans[m], num_frames) for m in modalities}


def fetch(inputs: Mapping[str, Tensor], name: str) -> Tensor:
    """``inputs[name]`` as a non-empty floating tensor; KeyError/TypeError/ValueError name ``name``."""
    if not isinstance(inputs, Mapping):
        raise TypeError(f"model inputs must be a mapping {{modality: tensor}}, got {type(inputs).__name__}")
    if name not in inputs:
        raise KeyError(f"input {name!r} is missing (model needs it; got keys {sorted(map(str, inputs))})")
    x = inputs[name]
    if not isinstance(x, Tensor):
        raise TypeError(f"input {name!r} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input {name!r} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"input {name!r} is an empty batch (shape {tuple(x.shape)})")
    return x


def prepare(inputs: Mapping[str, Tensor], name: str, spec: InputSpec) -> Tensor:
    """Fetch ``inputs[name]`` and reshape it for a 2-D backbone according to ``spec`` (see InputSpec)."""
    x = fetch(inputs, name)
    shape = tuple(x.shape)
    if spec.kind == "vector":
        if x.ndim != 2 or shape[1] != spec.channels:
            raise ValueError(f"input {name!r} must have shape (B, {spec.channels}), got {shape}")
        return x.reshape(shape[0], shape[1], 1, 1)
    if x.ndim == 4 and spec.num_frames == 1:
        if shape[1] != spec.channels:
            raise ValueError(
                f"input {name!r} has {shape[1]} channels (shape {shape}) but the model was built "
                f"with in_channels[{name!r}]={spec.channels}"
            )
        return x
    if x.ndim == 5:
        b, t, c, h, w = shape
        if c != spec.channels:
            raise ValueError(
                f"input {name!r} has {c} channels (shape {shape}, layout B,T,C,H,W) but the model "
                f"was built with in_channels[{name!r}]={spec.channels}"
            )
        if t != spec.num_frames:
            raise ValueError(
                f"input {name!r} is a clip of {t} frames (shape {shape}) but the model was built "
                f"with num_frames={spec.num_frames}; pass num_frames={t} to build_model"
            )
        return x.reshape(b, t * c, h, w)
    want = "(B, C, H, W)" if spec.num_frames == 1 else f"(B, {spec.num_frames}, C, H, W)"
    raise ValueError(f"input {name!r} must have shape {want}, got {shape}")


#: Clip layouts a model may take: the mmh data convention and torchvision video's.
CLIP_LAYOUTS = ("BTCHW", "BCTHW")


def check_layout(layout: object) -> str:
    """``layout`` if it is one of :data:`CLIP_LAYOUTS`, else a ValueError naming it."""
    if layout not in CLIP_LAYOUTS:
        raise ValueError(f"layout must be 'BTCHW' or 'BCTHW', got {layout!r}")
    return layout  # type: ignore[return-value]


def as_clip(inputs: Mapping[str, Tensor], name: str, channels: int, layout: str = "BTCHW") -> Tensor:
    """Fetch a clip ``inputs[name]`` and return it as (B, T, C, H, W).

    ``layout`` is the layout of the input: "BTCHW" (the mmh data convention) or "BCTHW" (torchvision video).
    A 4-D (B, C, H, W) image is accepted as a one-frame clip.
    """
    check_layout(layout)
    x = fetch(inputs, name)
    if x.ndim == 4:
        x = x.unsqueeze(1)
    elif x.ndim == 5:
        if layout == "BCTHW":
            x = x.transpose(1, 2)
    else:
        raise ValueError(f"input {name!r} must be a clip of shape ({', '.join(layout)}), got {tuple(x.shape)}")
    if x.shape[2] != channels:
        raise ValueError(
            f"input {name!r} has {x.shape[2]} channels (shape {tuple(x.shape)} as B,T,C,H,W) but the "
            f"model was built with in_channels[{name!r}]={channels}"
        )
    return x


def check_same_spatial(maps: Mapping[str, Tensor]) -> None:
    """Raise ValueError if the feature maps of different branches have different spatial sizes."""
    sizes = {k: tuple(int(d) for d in v.shape[2:]) for k, v in maps.items()}  # ints: sizes are tensors when traced
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"branches produce feature maps of different spatial sizes {sizes}; feed every "
            f"modality at the same resolution"
        )
