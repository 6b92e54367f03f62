"""Seeded random weights for an AdaFuse state dict, reproducible from the seed alone.

Used to compare our loader with the official code without a trained checkpoint: the reference
generator (tests/reference/make_adafuse_refs.py) fills the official model's state dict with these
values and our test fills ours; both key sets are the same, so both get the same tensors.

Keys are filled in sorted order from one ``torch.Generator``. Tensors that share storage (the
shared policy FCs appear under ``gate_fc0s.<key>`` and under every block using them) are filled
once, at their first key in that order, and the other names get the same values. The scales keep
activations O(1) through depth and make the policy vary: conv/linear weights ~ N(0, 1/fan_in),
biases ~ N(0, 0.1^2), BN weight ~ U(0.5, 1), BN bias ~ N(0, 0.1^2), running mean ~ N(0, 0.1^2),
running var ~ U(0.5, 1.5).
"""

from __future__ import annotations

import math

import torch


def _fill(key: str, shape: torch.Size, dtype: torch.dtype, g: torch.Generator, bn_keys: set[str]) -> torch.Tensor:
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    prefix, _, leaf = key.rpartition(".")
    if prefix in bn_keys:
        if leaf == "weight":
            return torch.rand(shape, generator=g) * 0.5 + 0.5
        if leaf == "running_var":
            return torch.rand(shape, generator=g) + 0.5
        return torch.randn(shape, generator=g) * 0.1  # bias, running_mean
    if leaf == "bias":
        return torch.randn(shape, generator=g) * 0.1
    fan_in = int(math.prod(shape[1:])) if len(shape) > 1 else 1
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def seeded_state_dict(state: dict[str, torch.Tensor], seed: int, bn_prefixes: set[str]) -> dict[str, torch.Tensor]:
    """New values for ``state`` (a model's state_dict: keys, shapes, storage sharing).

    bn_prefixes: the module names (state-dict prefixes) of the BatchNorm layers."""
    g = torch.Generator().manual_seed(int(seed))
    by_storage: dict[tuple[int, int], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        t = state[key]
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident not in by_storage:
            by_storage[ident] = _fill(key, t.shape, t.dtype, g, bn_prefixes)
        out[key] = by_storage[ident]
    return out


def bn_prefixes(model: torch.nn.Module, prefix: str = "") -> set[str]:
    return {prefix + n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def randomize(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Fill ``model`` in place with :func:`seeded_state_dict` values; returns the state dict."""
    sd = seeded_state_dict(model.state_dict(), seed, bn_prefixes(model))
    model.load_state_dict(sd, strict=True)
    return sd
