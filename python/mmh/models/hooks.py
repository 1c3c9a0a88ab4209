"""Intermediate features by forward hooks on dotted module paths (models are never edited to expose them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule of ``model`` at dotted ``path`` ("" is the model); ValueError naming the path otherwise."""
    if not isinstance(path, str):
        raise TypeError(f"module path must be a string, got {type(path).__name__}")
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        head = path.rsplit(".", 1)[0]
        near = [n for n in names if n.startswith(head)][:10] or names[:10]
        raise ValueError(f"model {type(model).__name__} has no module at path {path!r}; e.g. {near}") from None


class FeatureExtractor:
    """Record the outputs of modules at dotted paths during forward passes.

    ::

        with FeatureExtractor(model, ["layer3", "layer4"]) as feats:
            logits = model(batch)
        feats["layer4"]   # the output of model.layer4 in that forward (graph kept, gradients flow)

    Keys are the paths. A module called several times in one forward keeps its last output. ``detach=True`` stores
    detached outputs (for frozen teachers). The hooks are removed on exit; the recorded features stay readable.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], *, detach: bool = False) -> None:
        if isinstance(paths, str):
            paths = [paths]
        self.model = model
        self.paths: list[str] = list(dict.fromkeys(paths))
        self.detach = detach
        self._modules = {p: get_module(model, p) for p in self.paths}
        self._handles: list[Any] = []
        self._features: dict[str, Any] = {}

    def _hook(self, path: str):
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if self.detach and hasattr(output, "detach"):
                output = output.detach()
            self._features[path] = output

        return hook

    def __enter__(self) -> FeatureExtractor:
        if self._handles:
            raise RuntimeError("FeatureExtractor is already active (nested use of the same instance)")
        self._features.clear()
        self._handles = [m.register_forward_hook(self._hook(p)) for p, m in self._modules.items()]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget the recorded features (e.g. between two forwards inside one ``with`` block)."""
        self._features.clear()

    def __getitem__(self, path: str) -> Any:
        if path not in self._modules:
            raise KeyError(f"{path!r} is not one of the hooked paths {self.paths}")
        if path not in self._features:
            raise KeyError(
                f"module {path!r} produced no output (was the model run inside the 'with' block, and "
                f"does its forward call that module?)"
            )
        return self._features[path]

    def __contains__(self, path: object) -> bool:
        return path in self._features

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    def items(self):
        """(path, feature) pairs recorded so far."""
        return self._features.items()
