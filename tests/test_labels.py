"""featadv_core.labels: the one label predictor and validator."""
from __future__ import annotations

import pytest
import torch

from featadv_core.labels import check_labels, predict_labels


def test_predict_labels_is_the_argmax_in_chunks():
    net = torch.nn.Linear(5, 4)
    x = torch.randn(11, 5)
    assert torch.equal(predict_labels(net, x, batch_size=3), net(x).argmax(1))
    assert predict_labels(net, x[:0]).shape == (0,)
    with pytest.raises(ValueError, match="batch_size"):
        predict_labels(net, x, batch_size=0)


def test_predict_labels_runs_in_the_models_dtype():
    """A half-precision model gets half-precision inputs (a float32 batch would not run)."""
    net = torch.nn.Linear(5, 4).to(torch.bfloat16)
    x = torch.randn(6, 5)
    assert torch.equal(predict_labels(net, x), net(x.bfloat16()).argmax(1))


def test_check_labels_known_answers():
    assert torch.equal(check_labels([1, 0, 2], 3, num_classes=3), torch.tensor([1, 0, 2]))
    assert torch.equal(check_labels(2, 3, broadcast=True), torch.tensor([2, 2, 2]))
    assert check_labels(torch.tensor([1], dtype=torch.int32), 1).dtype == torch.long
    with pytest.raises(ValueError, match="integer"):
        check_labels(torch.tensor([0.5]), 1)
    with pytest.raises(ValueError, match=r"one class per image \(3\)"):
        check_labels(2, 3)
    with pytest.raises(ValueError, match=r"target must be classes in 0..2"):
        check_labels([0, 3], 2, num_classes=3, name="target")
    with pytest.raises(ValueError, match="non-negative"):
        check_labels([-1], 1)
