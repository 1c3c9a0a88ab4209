"""``r2plus1d_18_streams``: one R(2+1)D-18 per modality (thesis ch. 5), checked against torchvision's network."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mmh.models import build_model, derive_student
from mmh.models.pretrained import cache_dir


def _torchvision_twin(model, stream: str) -> torch.nn.Module:
    """torchvision's r2plus1d_18 carrying ``stream``'s weights and head (first conv widened to the stream's)."""
    src = model.streams[stream]
    net = torchvision.models.video.r2plus1d_18(weights=None, num_classes=model.heads[stream].out_features)
    old = net.stem[0]
    net.stem[0] = torch.nn.Conv3d(src.stem[0].in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    net.stem[0].bias = None
    sd = {k: v for k, v in src.state_dict().items()}
    sd.update({f"fc.{k}": v for k, v in model.heads[stream].state_dict().items()})
    net.load_state_dict(sd)
    return net.eval()


def test_each_stream_is_torchvisions_r2plus1d_18_on_its_modality_and_logits_are_their_mean():
    torch.manual_seed(0)
    model = build_model("r2plus1d_18_streams", modalities=["rgb", "depth", "flow"], num_classes=4, num_frames=4)
    model.eval()
    batch = {"rgb": torch.randn(2, 4, 3, 32, 32), "depth": torch.randn(2, 4, 1, 32, 32)}
    batch["flow"] = torch.randn(2, 4, 2, 32, 32)
    fused, per = model.forward_all(batch)
    assert list(per) == ["rgb", "depth", "flow"]
    with torch.no_grad():
        for s in per:  # torchvision takes (B, C, T, H, W)
            torch.testing.assert_close(per[s], _torchvision_twin(model, s)(batch[s].transpose(1, 2)))
        torch.testing.assert_close(fused, torch.stack(list(per.values())).mean(0))
        # (B, C, T, H, W) input with layout BCTHW gives the same logits
        model.layout = "BCTHW"
        torch.testing.assert_close(model({k: v.transpose(1, 2) for k, v in batch.items()}), fused)
    # the streams share nothing
    ids = [{id(p) for p in model.streams[s].parameters()} for s in per]
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])


def test_derive_student_keeps_only_the_named_streams_and_errors_are_clear():
    model = build_model("r2plus1d_18_streams", modalities=["rgb", "depth"], num_classes=3)
    student = derive_student(model, ["rgb"])
    assert list(student.streams) == ["rgb"] and student.streams["rgb"].stem[0].in_channels == 3
    with pytest.raises(ValueError, match="layout"):
        build_model("r2plus1d_18_streams", modalities=["rgb"], num_classes=3, layout="TBCHW")
    with pytest.raises(ValueError, match="channels"):
        model({"rgb": torch.randn(1, 2, 3, 16, 16), "depth": torch.randn(1, 2, 3, 16, 16)})


def test_kinetics400_initialises_every_stream_from_torchvisions_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    folder = cache_dir()
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    sd = torchvision.models.video.r2plus1d_18(weights=None).state_dict()
    sd = {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(sd, folder / "r2plus1d_18-91a641e6.pth")
    model = build_model("r2plus1d_18_streams", modalities=["rgb", "depth"], num_classes=2, pretrained="kinetics400")
    msd = model.state_dict()
    for s, c in (("rgb", 3), ("depth", 1)):
        for k, v in sd.items():
            if k.startswith("fc."):
                continue
            got = msd[f"streams.{s}.{k}"]
            if k == "stem.0.weight" and c != 3:  # adapted: the RGB filters' mean, x 3 / 1
                torch.testing.assert_close(got, v.mean(1, keepdim=True) * 3)
            else:
                assert torch.equal(got, v), (s, k)
