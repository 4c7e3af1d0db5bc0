"""Without PyTorch (the `neural` extra), training says what to install; nothing else needs it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from recsys.sequence_model import UserTower, random_weights
from recsys.sequence_train import NeuralParams, NeuralUnavailable, fit_neural


def test_training_without_torch_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(NeuralUnavailable, match=r"\.\[neural\]"):
        fit_neural([[0, 1, 2]], 3, NeuralParams(dim=4, window=2, hidden=4, epochs=1))
    # the forward pass is numpy only: stream and serving work without the extra
    tower = UserTower(np.eye(4, dtype=np.float32), random_weights(4, 2, 4))
    assert tower.user_vectors([np.array([0, 1])]).shape == (1, 4)
