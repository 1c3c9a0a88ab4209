"""The two generic multimodal shapes: a joint (early/middle fusion) net and a late-fusion net.

Each built-in architecture is one of these with its own stems/streams (see ``small.py`` and ``resnet.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .base import ZooModel
from .blocks import AveragedLinear, Concat
from .inputs import InputSpec, check_same_spatial, prepare


class JointNet(ZooModel):
    """Per-modality stems, concatenated, an optional reduction, shared layers, global average pool, classifier.

    ``stems[m]`` maps the prepared input of modality m (see ``InputSpec``: clips fold time into channels) to a
    feature map; all stems must give the same spatial size. ``shared`` is an ordered mapping name -> module whose
    names become attributes (e.g. ``layer3``, ``layer4``); the last one is ``feature_paths["penultimate"]`` and all
    are ``feature_paths["dad"]``. ``logits == classifier(<last shared output>.mean((2, 3)))``.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        specs: Mapping[str, InputSpec],
        stems: Mapping[str, nn.Module],
        shared: Mapping[str, nn.Module],
        out_channels: int,
        num_classes: int,
        reduce: nn.Module | None = None,
    ) -> None:
        super().__init__(modalities)
        self.specs = dict(specs)
        self.stems = nn.ModuleDict({m: stems[m] for m in modalities})
        self.fuse = Concat()
        self.reduce = reduce if reduce is not None else nn.Identity()
        self.shared_names = list(shared)
        if not self.shared_names:
            raise ValueError("JointNet needs at least one shared layer")
        for name, module in shared.items():
            self.add_module(name, module)
        self.classifier = nn.Linear(out_channels, num_classes)
        self.feature_paths = {
            "penultimate": self.shared_names[-1],
            "dad": list(self.shared_names),
            "fused": "fuse",
            **{f"stem.{m}": f"stems.{m}" for m in modalities},
        }

    def forward_features(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The penultimate map (B, C, H, W)."""
        maps = {m: self.stems[m](prepare(inputs, m, self.specs[m])) for m in self.modalities}
        check_same_spatial(maps)
        x = self.reduce(self.fuse(list(maps.values())))
        for name in self.shared_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits (B, K) from the modalities of ``self.modalities`` (other keys ignored)."""
        return self.classifier(self.forward_features(inputs).mean((2, 3)))


class LateFusionNet(ZooModel):
    """One full backbone per stream, one linear head per stream, logits averaged over streams.

    ``streams`` maps a stream name to the modality it reads (default: one stream per modality; two streams may
    read the same modality, e.g. RGB + hallucination both fed RGB). No layer is shared, so
    ``feature_paths["dad"]`` is empty (DAD needs a joint representation). The penultimate map is the
    concatenation of the streams' last maps (module ``fuse``) and ``classifier`` is the ``AveragedLinear`` of the
    heads, so ``logits == classifier(penultimate.mean((2, 3)))`` holds as for the joint nets.
    ``forward_streams`` returns the per-stream logits.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        specs: Mapping[str, InputSpec],
        backbones: Mapping[str, nn.Module],
        streams: Mapping[str, str],
        out_channels: Mapping[str, int],
        num_classes: int,
    ) -> None:
        super().__init__(modalities)
        if not streams:
            raise ValueError("LateFusionNet needs at least one stream")
        self.specs = dict(specs)
        self.stream_inputs = dict(streams)
        self.streams = nn.ModuleDict({s: backbones[s] for s in streams})
        self.heads = nn.ModuleDict({s: nn.Linear(out_channels[s], num_classes) for s in streams})
        self.fuse = Concat()
        self.classifier = AveragedLinear(self.heads)
        self.feature_paths = {"penultimate": "fuse", "dad": [], **{f"stream.{s}": f"streams.{s}" for s in streams}}

    def stream_maps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The last feature map (B, C, H, W) of every stream (subclasses change how streams interact)."""
        return {s: self.streams[s](prepare(inputs, m, self.specs[m])) for s, m in self.stream_inputs.items()}

    def forward_all(self, inputs: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """(averaged logits (B, K), {stream: logits (B, K)})."""
        maps = self.stream_maps(inputs)
        check_same_spatial(maps)
        fused = self.fuse(list(maps.values()))
        per_stream = {s: self.heads[s](maps[s].mean((2, 3))) for s in maps}
        return self.classifier(fused.mean((2, 3))), per_stream

    def forward_streams(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-stream logits {stream: (B, K)}."""
        return self.forward_all(inputs)[1]

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Averaged logits (B, K)."""
        return self.forward_all(inputs)[0]


def resolve_streams(modalities: tuple[str, ...], streams: Mapping[str, str] | None) -> dict[str, str]:
    """Stream name -> modality; default one stream per modality. ValueError for a stream reading an unknown key."""
    if streams is None:
        return {m: m for m in modalities}
    if not isinstance(streams, Mapping) or not streams:
        raise ValueError(f"streams must be a non-empty mapping {{stream: modality}}, got {streams!r}")
    for s, m in streams.items():
        if m not in modalities:
            raise ValueError(f"stream {s!r} reads modality {m!r} which is not in modalities {list(modalities)}")
    unused = [m for m in modalities if m not in streams.values()]
    if unused:
        raise ValueError(f"modalities {unused} are read by no stream in streams={dict(streams)}")
    return dict(streams)
