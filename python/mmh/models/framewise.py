"""``small_framewise``: a late-fusion net whose streams see one frame at a time (ADMD needs per-frame features).

Clips (B, T, C, H, W) are folded frames-into-batch; each stream is ``small_stem`` + ``layer3`` + ``layer4`` +
``bottleneck`` (ADMD's pool + 1x1 conv, ``bottleneck`` channels) applied per frame, the per-frame bottleneck
vectors are averaged over time (``time_pool``) and a linear head per stream gives logits, averaged over streams.
``feature_paths["bottleneck.<stream>"]`` is the per-frame bottleneck module (output (B*T, d, 1, 1), frame t of clip
b at row b*T + t).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from torch import Tensor, nn

from .blocks import BottleneckHead
from .fusion import LateFusionNet, resolve_streams
from .inputs import as_clip, image_specs
from .registry import register_model
from .small import small_stem, small_trunk
from .video import TimeMean

__all__ = ["FramewiseLateFusion", "small_framewise"]


class FramewiseLateFusion(LateFusionNet):
    """LateFusionNet over frames folded into the batch, stream maps averaged over time (see module docstring)."""

    def __init__(self, *args, temporal: str = "concat", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if temporal not in ("concat", "mean"):
            raise ValueError(f"temporal must be 'concat' or 'mean', got {temporal!r}")
        self.temporal = temporal
        self.time_pool = TimeMean()
        self.feature_paths.update({f"bottleneck.{s}": f"streams.{s}.bottleneck" for s in self.stream_inputs})

    def stream_maps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for s, m in self.stream_inputs.items():
            clip = as_clip(inputs, m, self.specs[m].channels)
            b, t = clip.shape[:2]
            y = self.streams[s](clip.reshape(b * t, *clip.shape[2:]))
            if self.temporal == "mean":
                out[s] = self.time_pool(y, t)
            else:  # (B*T, d, h, w) -> (B, T*d, h, w), frame-major channels
                out[s] = y.reshape(b, t * y.shape[1], *y.shape[2:])
        return out


@register_model("small_framewise")
def small_framewise(
    *,
    modalities: tuple[str, ...],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    num_frames: int = 1,
    width: int = 16,
    shared_width: int = 32,
    bottleneck: int = 128,
    streams: Mapping[str, str] | None = None,
    temporal: str = "concat",
) -> FramewiseLateFusion:
    """Per-frame small streams with a ``bottleneck``-d head, aggregated over time (``temporal``: "concat" — the
    heads take ``num_frames * bottleneck`` features, clips must have ``num_frames`` frames — or "mean"), logits
    averaged over streams."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    specs = image_specs(modalities, in_channels, 1)
    smap = resolve_streams(modalities, streams)
    backbones = {
        s: nn.Sequential(
            OrderedDict(stem=small_stem(specs[m].channels, width), **small_trunk(width, shared_width, bottleneck))
        )
        for s, m in smap.items()
    }
    for b in backbones.values():
        assert isinstance(b.bottleneck, BottleneckHead)
    width_out = bottleneck * (num_frames if temporal == "concat" else 1)
    return FramewiseLateFusion(
        modalities, specs, backbones, smap, {s: width_out for s in smap}, num_classes, temporal=temporal
    )
