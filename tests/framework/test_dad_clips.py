"""DAD on clip models that fold time into the batch: the matrix is b x b over samples (frames concatenated)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmh.methods.dad import DADDistiller, per_sample

pytest.importorskip("mmh_ext")


def _paper_dad(hs: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
    """‖D_s − D_t‖_F with D(j, k) = ½ − ½ cos(H_j, H_k), written out (the paper's form)."""

    def disc(h):
        n = h / h.norm(dim=1, keepdim=True)
        return 0.5 - 0.5 * n @ n.T

    return (disc(hs) - disc(ht)).norm()


def test_per_sample_concatenates_the_frames_of_each_clip():
    b, t = 2, 3
    frames = torch.arange(b * t * 2, dtype=torch.float32).view(b * t, 2, 1, 1)  # row b*T + t
    rows = per_sample(frames, b)
    assert rows.shape == (2, 6)
    assert rows[1].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]  # sample 1 = frames 3, 4, 5 in order
    assert torch.equal(per_sample(frames, b * t), frames.flatten(1))  # one row per sample already
    with pytest.raises(ValueError, match="multiple of the batch size"):
        per_sample(frames, 4)


def test_dad_on_frames_in_the_batch_is_b_by_b():
    torch.manual_seed(0)
    b, t = 3, 2
    fs, ft = torch.randn(b * t, 4, 2, 2), torch.randn(b * t, 4, 2, 2)
    stage = DADDistiller(
        nn.Identity(), nn.Identity(), beta=1.0, form="paper", layers=["x"], teacher_layers=["x"], gather=False
    )
    out = stage.distill_losses(torch.zeros(b, 5), torch.zeros(b, 5), {"x": fs}, {"x": ft}, {})["loss_dad"]
    want = _paper_dad(fs.reshape(b, -1), ft.reshape(b, -1))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    frames = _paper_dad(fs.flatten(1), ft.flatten(1))  # the (B*T) x (B*T) matrix over frames: not what we compute
    assert abs(out.item() - frames.item()) > 1e-3
