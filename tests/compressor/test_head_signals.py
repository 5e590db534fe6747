"""compressor/head_signals.py: one row per task of variant/heads.py, and what each row's
signals promise the compression methods (a scalar loss with gradients; a divergence per
input that is zero for the same logits and grows as they part)."""

import pytest

pytest.importorskip("torch", reason="the head signals are computed in torch (the [compress] extra)")

import torch

from compressor.head_signals import SIGNALS, head_divergence, self_predicted_loss
from variant.heads import HEADS

WIDTH = {"single_label": 3, "multi_label": 3, "regression": 1}


def test_the_signals_have_a_row_for_every_task_of_the_heads_table():
    assert set(SIGNALS) == set(HEADS) == set(WIDTH)


@pytest.mark.parametrize("task", list(HEADS))
def test_self_loss_is_a_scalar_with_gradients(task):
    logits = torch.randn(4, WIDTH[task], generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = self_predicted_loss(logits, task)
    assert loss.dim() == 0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("task", list(HEADS))
def test_divergence_is_per_input_zero_for_the_same_logits_and_grows_apart(task):
    reference = torch.randn(4, WIDTH[task], generator=torch.Generator().manual_seed(1))
    nudge = torch.randn(4, WIDTH[task], generator=torch.Generator().manual_seed(2))
    same = head_divergence(reference, reference, task)
    assert same.shape == (4,) and torch.allclose(same, torch.zeros(4), atol=1e-6)
    near, far = head_divergence(reference, reference + 0.1 * nudge, task), head_divergence(reference, reference + nudge, task)
    assert (near >= -1e-6).all() and (far > near).all()
