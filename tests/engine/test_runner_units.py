"""Small pure pieces of the engine runner."""

from __future__ import annotations

import pytest

from llmux.engine.runner import gpu_fraction


@pytest.mark.parametrize(
    ("n_gpu", "n_layer", "supported", "share"),
    [
        (-1, 30, True, 1.0),
        (0, 30, True, 0.0),
        (31, 30, True, 1.0),
        (99, 30, True, 1.0),
        (15, 29, True, 0.5),
        (-1, 30, False, 0.0),
    ],
)
def test_gpu_fraction(n_gpu: int, n_layer: int, supported: bool, share: float) -> None:
    assert gpu_fraction(n_gpu, n_layer, supported=supported) == share
