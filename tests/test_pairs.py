"""featadv_core.pairs: source–guide sampling protocols."""
from __future__ import annotations

import pytest
import torch

from featadv_core.pairs import sample_pairs


def test_pairs_differ_in_class_and_repeat():
    labels = torch.arange(100) % 10
    s, g = sample_pairs(labels, 40, seed=1)
    assert len(s) == 40 and (labels[s] != labels[g]).all()
    assert len(set(zip(s.tolist(), g.tolist()))) == 40
    s2, g2 = sample_pairs(labels, 40, seed=1)
    assert torch.equal(s, s2) and torch.equal(g, g2)


def test_table1_protocol():
    labels = torch.arange(100) % 10
    preds = labels.clone()
    preds[:50] = (labels[:50] + 1) % 10          # first half misclassified
    s, g = sample_pairs(labels, 30, seed=0, preds=preds, guide_correct=True)
    assert (preds[g] == labels[g]).all() and (preds[s] != labels[g]).all()


def test_impossible_requests():
    with pytest.raises(ValueError, match="found only"):
        sample_pairs(torch.zeros(10, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="needs preds"):
        sample_pairs(torch.arange(10), 3, guide_correct=True)


def test_lots_target_selection_helpers():
    from featadv_core.pairs import first_correct_per_class, nearest_of_class, stratified

    labels = torch.tensor([1, 0, 1, 0, 2, 2, 1])
    preds = torch.tensor([0, 0, 1, 0, 1, 2, 1])
    assert first_correct_per_class(labels, preds).tolist() == [1, 2, 5]
    with pytest.raises(ValueError, match="class 3"):
        first_correct_per_class(labels, preds, num_classes=4)
    x = torch.arange(7, dtype=torch.float32).view(7, 1, 1, 1)
    assert nearest_of_class(x, labels, preds, torch.tensor([[[5.8]]]), 1) == 6
    idx = stratified(labels, 2, mask=labels == preds, seed=0)
    assert set(idx.tolist()) <= {1, 2, 3, 5, 6} and len(idx) == 5
    assert torch.equal(idx, stratified(labels, 2, mask=labels == preds, seed=0))


def test_no_correct_guide_says_why():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="classifies none of the 6 images correctly"):
        sample_pairs(labels, 2, preds=labels + 400, guide_correct=True)
