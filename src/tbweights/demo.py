"""A built-in model for a first run: a 784-128-10 MLP at its initial weights.

It needs only NumPy. Weights and biases are drawn the way `torch.nn.Linear`
initializes them (uniform in +-1/sqrt(fan_in)), from a fixed seed.
"""

from __future__ import annotations

import numpy as np

LAYER_SIZES = (784, 128, 10)


def demo_model(seed: int = 0) -> dict[str, np.ndarray]:
    """State dict of the demo MLP: `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for index, (fan_in, fan_out) in enumerate(zip(LAYER_SIZES, LAYER_SIZES[1:], strict=False), start=1):
        bound = 1.0 / np.sqrt(fan_in)
        weights[f"fc{index}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        weights[f"fc{index}.bias"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    return weights
