"""Prototype memory (build, PCL, hardest-sample update in backward) and the per-epoch LR schedule."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from dcac_plugin.engine.memory import PrototypeMemory
from dcac_plugin.engine.schedule import build_scheduler, warmup_multistep_factor

# ------------------------------------------------------------------------------------------ LR

SPEC_TABLE = {  # docs/METHOD.md §7.3, base 5e-6
    1: 0.95e-6,
    2: 1.40e-6,
    3: 1.85e-6,
    4: 2.30e-6,
    5: 2.75e-6,
    6: 3.20e-6,
    7: 3.65e-6,
    8: 4.10e-6,
    9: 4.55e-6,
    10: 5e-6,
    20: 5e-6,
    29: 5e-6,
    30: 5e-7,
    49: 5e-7,
    50: 5e-8,
    60: 5e-8,
}


def test_warmup_multistep_factor_table():
    for e, lr in SPEC_TABLE.items():
        assert 5e-6 * warmup_multistep_factor(e) == pytest.approx(lr, rel=1e-12, abs=0), e
    assert warmup_multistep_factor(1) == pytest.approx(0.19)
    with pytest.raises(ValueError, match="1-based"):
        warmup_multistep_factor(0)
    assert warmup_multistep_factor(5, warmup_epochs=0) == 1.0
    assert warmup_multistep_factor(3, milestones=(2,), gamma=0.5, warmup_epochs=0) == 0.5


def test_scheduler_stepped_per_epoch_reproduces_table_and_keeps_group_ratios():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p1], "lr": 5e-6}, {"params": [p2], "lr": 1e-5}], weight_decay=1e-4)
    sched = build_scheduler(opt)
    seen = {}
    for epoch in range(1, 61):
        seen[epoch] = [g["lr"] for g in opt.param_groups]
        opt.step()  # one "epoch" of training
        sched.step()  # end of epoch (torchreid Engine.update_lr convention)
    for e, lr in SPEC_TABLE.items():
        assert seen[e][0] == pytest.approx(lr, rel=1e-12), e
        assert seen[e][1] == pytest.approx(2 * lr, rel=1e-12), e
    # state round trip through a weights_only load resumes at the same epoch
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    opt2 = torch.optim.Adam([{"params": [p1], "lr": 5e-6}, {"params": [p2], "lr": 1e-5}])
    sched2 = build_scheduler(opt2)
    sched2.load_state_dict(torch.load(buf, weights_only=True))
    assert sched2.last_epoch == 60


# ------------------------------------------------------------------------------------------ memory


def test_build_is_mean_of_normalised_features_renormalised():
    mem = PrototypeMemory(3, dim=2)
    feats = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, -5.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])
    mem.build(feats, labels)
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[s, s], [0.0, -1.0], [s, s]])
    torch.testing.assert_close(mem.features, expected)
    with pytest.raises(ValueError, match="no feature"):
        mem.build(feats[:3], labels[:3])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        mem.build(feats, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="build expects"):
        mem.build(torch.zeros(4, 3), labels)


def test_loss_before_build_raises():
    with pytest.raises(RuntimeError, match="build"):
        PrototypeMemory(2, dim=2).loss(torch.randn(2, 2), torch.tensor([0, 1]))


def test_pcl_loss_grad_and_hard_update_hand_case():
    mem = PrototypeMemory(2, dim=2, temperature=0.01, momentum=0.2)
    mem.build(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    old = mem.features.clone()
    # label 0: cosines 0.6 (hardest), 0.8; label 1 absent. Inputs un-normalised (x2) on purpose.
    z = torch.tensor([[1.2, 1.6], [1.6, 1.2]], requires_grad=True)
    labels = torch.tensor([0, 0])
    loss = mem.loss(z, labels)
    zn = F.normalize(z.detach(), dim=1)
    ref_z = z.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(F.normalize(ref_z, dim=1) @ old.t() / 0.01, labels)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(mem.features, old)  # no update before backward
    loss.backward()
    ref.backward()
    torch.testing.assert_close(z.grad, ref_z.grad)  # gradient uses the pre-update memory
    new0 = torch.tensor([0.2 * 1 + 0.8 * 0.6, 0.8 * 0.8])  # [0.68, 0.64]
    new0 = new0 / new0.norm()
    torch.testing.assert_close(mem.features[0], new0)
    torch.testing.assert_close(mem.features[1], old[1])
    assert torch.allclose(zn[0] @ old[0], torch.tensor(0.6))


def test_hard_update_tie_takes_first_and_each_label_once():
    mem = PrototypeMemory(3, dim=2, momentum=0.5)
    mem.build(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 2]))
    z = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 0, 1])
    # label 0: cosines 0, 0, 0 -> first (index 0, [0, 1]); label 1: cosines 0, 0 -> index 2 ([1, 0])
    mem.loss(z, labels).backward()
    torch.testing.assert_close(mem.features[0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    torch.testing.assert_close(mem.features[1], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    torch.testing.assert_close(mem.features[2], torch.tensor([1.0, 0.0]))


def test_non_hard_update_every_sample_in_order():
    mem = PrototypeMemory(1, dim=2, momentum=0.5, hard_update=False)
    mem.build(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    z = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    mem.loss(z, torch.tensor([0, 0])).backward()
    m = F.normalize(torch.tensor([0.5, 0.5]), dim=0)
    m = F.normalize(0.5 * m + 0.5 * torch.tensor([0.0, 1.0]), dim=0)
    torch.testing.assert_close(mem.features[0], m)


def test_no_update_without_backward_and_state_dict_round_trip():
    torch.manual_seed(0)
    mem = PrototypeMemory(4, dim=8)
    mem.build(torch.randn(12, 8), torch.arange(12) % 4)
    before = mem.features.clone()
    with torch.no_grad():
        mem.loss(torch.randn(4, 8), torch.arange(4))
    torch.testing.assert_close(mem.features, before)
    mem2 = PrototypeMemory(4, dim=8)
    mem2.load_state_dict(mem.state_dict())
    torch.testing.assert_close(mem2.features, before)
    assert mem2.loss(torch.randn(2, 8), torch.tensor([0, 1])).ndim == 0  # built flag restored
    snap = mem.snapshot()
    snap.zero_()
    torch.testing.assert_close(mem.features, before)
