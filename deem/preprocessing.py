"""Learnable Multinomial preprocessing layers between the classifiers and the RBM.

A layer maps the class distributions of ``D_in`` classifiers to those of
``D_out`` *virtual* classifiers: for each virtual classifier ``j`` it mixes the
inputs' distributions with weights ``A[j, i]``, adds a class bias ``c[j]`` and
turns the result back into a distribution over the ``K`` classes with its
activation. The RBM sees the virtual classifiers as soft labels.

Missing inputs: a missing classifier contributes nothing to the mix, and each
virtual classifier's output is scaled by the share of its (absolute) input
weight that was present on that row. A virtual classifier fed only by missing
inputs is therefore missing itself (an all-zero column), and one fed partly by
missing inputs gives proportionally weaker evidence; with the identity
initialization missing stays exactly missing.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from ._validation import LabelData

ACTIVATIONS = ("sparsemax", "entmax", "softmax", "relu", "gelu", "silu")
PREPROCESSING_INITS = ("identity", "rand", "mv")

# Scale of the identity initialization per activation: the smallest margin at
# which a one-hot input comes out (almost) one-hot. sparsemax and entmax-1.5 are
# exactly one-hot from margins 1 and 2; softmax(5 * e_k) puts 0.97 on k among 5
# classes; the rectifiers pass 1 and 0 through (up to GELU's 0.84), and the
# output is renormalized.
IDENTITY_SCALE = {"sparsemax": 2.0, "entmax": 3.0, "softmax": 5.0, "relu": 1.0, "gelu": 1.0, "silu": 1.0}
# Rectifier outputs below this total are treated as "no evidence" and spread uniformly.
_TINY = 1e-6


def _simplex(name: str, z: torch.Tensor, use_softmax: bool) -> torch.Tensor:
    """Activation over the class axis (dim 1) followed, if needed, by a map onto the simplex."""
    if name == "sparsemax":
        from entmax import sparsemax

        return sparsemax(z, dim=1)
    if name == "entmax":
        from entmax import entmax15

        return entmax15(z, dim=1)
    if name == "softmax":
        return torch.softmax(z, dim=1)
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[name](z)
    if use_softmax:
        return torch.softmax(act, dim=1)
    # GELU and SiLU dip below zero: keep the non-negative part, then normalize.
    act = act.clamp(min=0)
    total = act.sum(dim=1, keepdim=True)
    uniform = torch.full_like(act, 1.0 / act.shape[1])
    return torch.where(total > _TINY, act / total.clamp(min=_TINY), uniform)


class MultinomialLayer(nn.Module):
    """``(N, K, D_in)`` class distributions -> ``(N, K, D_out)`` class distributions."""

    def __init__(self, d_in: int, d_out: int, n_classes: int, activation: str,
                 use_softmax: bool = False, one_hot: bool = False, jitter: float = 0.0,
                 device=None, dtype=torch.float32):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"preprocessing_activation must be one of {ACTIVATIONS}; got {activation!r}")
        self.activation = activation
        self.use_softmax = bool(use_softmax)
        self.one_hot = bool(one_hot)
        self.jitter = float(jitter)
        self.weight = nn.Parameter(torch.zeros(d_out, d_in, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_out, n_classes, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, mass: torch.Tensor, generator: Optional[torch.Generator] = None):
        """``x`` ``(N, K, D_in)`` distributions (zero columns where missing), ``mass`` ``(N, D_in)`` in [0, 1].

        Returns ``(out (N, K, D_out), out_mass (N, D_out))``.
        """
        z = torch.einsum("nki,ji->nkj", x, self.weight) + self.bias.t().unsqueeze(0)
        if self.training and self.jitter > 0:
            z = z + self.jitter * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        p = _simplex(self.activation, z, self.use_softmax)
        if self.one_hot:
            # Straight-through: the RBM sees the argmax, gradients flow through p.
            hard = torch.nn.functional.one_hot(p.argmax(dim=1), p.shape[1]).permute(0, 2, 1).to(p.dtype)
            p = hard + p - p.detach()
        a = self.weight.abs()
        out_mass = (mass @ a.t()) / a.sum(dim=1).clamp(min=1e-12)  # (N, D_out)
        return p * out_mass.unsqueeze(1), out_mass


class Preprocessor(nn.Module):
    """A stack of Multinomial layers; ``widths`` are the virtual classifier counts, last one feeds the RBM."""

    def __init__(self, d_in: int, widths: Sequence[int], n_classes: int, activation: str,
                 use_softmax: bool = False, one_hot: bool = False, jitter: float = 0.0,
                 device=None, dtype=torch.float32):
        super().__init__()
        dims = [int(d_in)] + [int(w) for w in widths]
        self.layers = nn.ModuleList(
            MultinomialLayer(a, b, n_classes, activation, use_softmax, one_hot, jitter, device, dtype)
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.n_classes = n_classes

    @property
    def widths(self) -> List[int]:
        return [layer.weight.shape[0] for layer in self.layers]

    @property
    def n_outputs(self) -> int:
        return self.widths[-1]

    def forward(self, data: LabelData, generator: Optional[torch.Generator] = None) -> LabelData:
        """Transform validated labels into the virtual classifiers' soft labels (a ``LabelData``)."""
        x, mass = as_distributions(data, self.layers[0].weight.dtype)
        for layer in self.layers:
            x, mass = layer(x, mass, generator)
        return LabelData(x, True, self.n_classes)


def as_distributions(data: LabelData, dtype=torch.float32):
    """``(N, K, D)`` distributions and ``(N, D)`` presence mass of validated labels.

    Hard labels become one-hot columns here, one batch at a time: the layers
    mix whole distributions, so there is no way around it.
    """
    if data.soft:
        x = data.values.to(dtype)
        return x, x.sum(dim=1)
    labels = data.values.long()
    present = labels >= 0
    x = torch.nn.functional.one_hot(labels.clamp(min=0), data.n_classes).permute(0, 2, 1).to(dtype)
    x = x * present.unsqueeze(1).to(dtype)
    return x, present.to(dtype)


def layer_widths(n_classifiers: int, n_layers: int, widths) -> List[int]:
    """The virtual classifier counts: explicit ``widths``, else ``n_layers`` layers of width ``n_classifiers``."""
    if widths is not None:
        return [int(w) for w in widths]
    return [int(n_classifiers)] * int(n_layers)


@torch.no_grad()
def initialize_preprocessor(pre: Preprocessor, data: LabelData, method: str, generator: torch.Generator) -> None:
    """``identity``: virtual classifier j starts as a copy of input ``j mod D_in`` (scaled so a one-hot
    stays one-hot); ``rand``: Gaussian mixing weights of std ``scale / sqrt(D_in)``; ``mv``: every virtual classifier starts
    as the majority vote weighted by each input's agreement with it, plus a little noise."""
    if method not in PREPROCESSING_INITS:
        raise ValueError(f"preprocessing_init must be one of {PREPROCESSING_INITS}; got {method!r}")
    from .alignment import agreement_with, majority_vote

    for depth, layer in enumerate(pre.layers):
        d_out, d_in = layer.weight.shape
        dev, dt = layer.weight.device, layer.weight.dtype
        scale = IDENTITY_SCALE[layer.activation]

        def noise(std):
            return (torch.randn(d_out, d_in, generator=generator, dtype=torch.float64) * std).to(dev, dt)

        layer.bias.zero_()
        if method == "rand":
            layer.weight.copy_(noise(scale / d_in ** 0.5))
        elif method == "mv" and depth == 0:
            w = agreement_with(data, majority_vote(data)).to(dev, torch.float64).clamp(min=1e-3)
            w = (w / w.sum()).to(dt)
            layer.weight.copy_(scale * w.unsqueeze(0).expand(d_out, d_in) + noise(1e-3 * scale / d_in))
        else:  # identity (and the layers after an 'mv' first layer)
            eye = torch.zeros(d_out, d_in, device=dev, dtype=dt)
            eye[torch.arange(d_out), torch.arange(d_out) % d_in] = scale
            layer.weight.copy_(eye)
