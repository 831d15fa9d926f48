"""Masked latent MSE: a latent cell counts only when all 8x8 pixels under it are valid."""

from __future__ import annotations

import torch

from stablemtl_edge.training.loss import latent_valid_mask, masked_latent_mse


def test_one_invalid_pixel_invalidates_its_latent_cell_only():
    valid = torch.ones(1, 16, 24, dtype=torch.bool)
    valid[0, 9, 17] = False  # inside latent cell (1, 2)
    m = latent_valid_mask(valid)
    assert m.shape == (1, 1, 2, 3)
    expected = torch.ones(1, 1, 2, 3, dtype=torch.bool)
    expected[0, 0, 1, 2] = False
    assert torch.equal(m, expected)


def test_loss_ignores_invalid_cells_and_averages_per_sample():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 4, 2, 3, generator=g)
    pred = target.clone()
    pred[0, :, 0, 0] += 100.0  # error only in a masked cell
    pred[1] += 1.0  # error 1 everywhere in sample 1
    valid = torch.ones(2, 1, 2, 3, dtype=torch.bool)
    valid[0, 0, 0, 0] = False
    valid[1, 0, :, :2] = False  # sample 1 keeps 2 of 6 cells: its mean stays 1
    loss = masked_latent_mse(pred, target, valid)
    assert torch.allclose(loss, torch.tensor(0.5))  # mean of per-sample means (0 and 1)


def test_a_sample_without_valid_cells_adds_nothing_and_gets_no_gradient():
    pred = torch.randn(2, 4, 2, 2, requires_grad=True)
    target = torch.zeros(2, 4, 2, 2)
    valid = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    valid[1] = False
    loss = masked_latent_mse(pred, target, valid)
    loss.backward()
    assert torch.allclose(loss, (pred[0] ** 2).mean() / 2)
    assert torch.count_nonzero(pred.grad[1]) == 0
    assert torch.count_nonzero(pred.grad[0]) == pred[0].numel()


def test_split_batch_mean_equals_whole_batch():
    # What two data-parallel ranks average equals the one-process loss of the whole batch.
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(4, 4, 2, 3, generator=g), torch.randn(4, 4, 2, 3, generator=g)
    valid = torch.rand(4, 1, 2, 3, generator=g) > 0.3
    whole = masked_latent_mse(pred, target, valid)
    halves = (masked_latent_mse(pred[:2], target[:2], valid[:2]) + masked_latent_mse(pred[2:], target[2:], valid[2:])) / 2
    assert torch.allclose(whole, halves)
