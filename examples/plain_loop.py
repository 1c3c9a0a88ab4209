"""mmh_ext in a plain PyTorch loop — no mmh framework, random tensors, runs in a few seconds on a CPU.

A multimodal teacher (RGB + depth streams joined by the cross-stream multiplicative injection) is frozen; an RGB
student learns from it with CE + alpha * region-aware distillation (with its trainable weighting layer)
+ beta * discrepancy-aware distillation. Run:  python examples/plain_loop.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import mmh_ext
from mmh_ext.nn import CrossStreamInjection, RegionAwareDistillation

torch.manual_seed(0)
K, B = 3, 16


def conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Teacher(nn.Module):
    """RGB stream whose residual branch sees RGB * relu(depth features), plus a depth stream."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb, self.depth = conv(3, 16), conv(1, 16)
        self.inject = CrossStreamInjection()
        self.branch = conv(16, 16)
        self.head = conv(32, 32)
        self.classifier = nn.Linear(32, K)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, d = self.rgb(rgb), self.depth(depth)
        a = a + self.branch(self.inject(a, d))  # x_a + F(x_a ⊙ relu(x_d)): the skip path is untouched
        feat = self.head(torch.cat([a, d], 1))  # (B, 32, H, W): the penultimate map
        return self.classifier(feat.mean((2, 3))), feat


class Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(3, 16), conv(16, 32))
        self.classifier = nn.Linear(32, K)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(rgb)
        return self.classifier(feat.mean((2, 3))), feat


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = torch.randint(0, K, (B,))
    depth = torch.randn(B, 1, 16, 16) + y.view(B, 1, 1, 1).float()  # depth carries the label
    rgb = torch.randn(B, 3, 16, 16) + 0.3 * y.view(B, 1, 1, 1).float()  # RGB only weakly
    return rgb, depth, y


# 1) the teacher, trained briefly with CE, then frozen (eval mode, no gradients)
teacher = Teacher()
opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
for _ in range(30):
    rgb, depth, y = batch()
    loss = F.cross_entropy(teacher(rgb, depth)[0], y)
    opt.zero_grad()
    loss.backward()
    opt.step()
teacher.eval().requires_grad_(False)

# 2) the student: CE + alpha * RAD + beta * DAD. RAD averages its 21 region losses (weighting="none", the default;
#    weighting="attention" is the paper's trained layer, whose parameters would go into the optimizer too).
student = Student()
rad = RegionAwareDistillation(grid=4, levels=(4, 2, 1), temperature=2.0)
opt = torch.optim.Adam([*student.parameters(), *rad.parameters()], lr=1e-2)
alpha, beta = 0.4, 1.0
for step in range(30):
    rgb, depth, y = batch()
    with torch.no_grad():
        t_logits, t_feat = teacher(rgb, depth)
    s_logits, s_feat = student(rgb)
    loss_ce = F.cross_entropy(s_logits, y)
    loss_rad = rad(s_feat, t_feat, student.classifier, teacher.classifier)
    loss_dad = mmh_ext.dad_loss(s_feat.flatten(1), t_feat.flatten(1), form="paper")
    loss = loss_ce + alpha * loss_rad + beta * loss_dad
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}  ce {loss_ce.item():.3f}  rad {loss_rad.item():.4f}  dad {loss_dad.item():.4f}")

# 3) the functional forms, for the record
r = mmh_ext.rad_loss(
    s_feat,
    t_feat,
    student.classifier.weight,
    student.classifier.bias,
    teacher.classifier.weight,
    teacher.classifier.bias,
    grid=4,
    levels=(4, 2, 1),
    temperature=2.0,
    reduction="region",
)
print(
    "per-region RAD losses:",
    tuple(r.shape),
    "| cosine discrepancy:",
    tuple(mmh_ext.cosine_discrepancy(s_feat.flatten(1)).shape),
    "| injection:",
    tuple(mmh_ext.cross_stream_inject(s_feat, t_feat).shape),
)
