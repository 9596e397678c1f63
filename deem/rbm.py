"""The multinomial RBM: its parameters and energies via the fused ops (the solvers set them: :mod:`deem.solvers`)."""
from __future__ import annotations

import torch
from torch import nn

from . import ops
from ._validation import LabelData


class RBM(nn.Module):
    """``D`` visible units and ``H`` hidden units, each with ``K`` states.

    ``W`` is ``(K, K, D, H)`` (visible state, hidden state, classifier, hidden unit),
    ``b_v`` is ``(D, K)`` and ``b_h`` is ``(H, K)``.
    """

    def __init__(self, n_visible: int, n_classes: int, n_hidden: int = 1, device=None, dtype=torch.float32):
        super().__init__()
        k, d, h = n_classes, n_visible, n_hidden
        self.W = nn.Parameter(torch.zeros(k, k, d, h, device=device, dtype=dtype))
        self.b_v = nn.Parameter(torch.zeros(d, k, device=device, dtype=dtype))
        self.b_h = nn.Parameter(torch.zeros(h, k, device=device, dtype=dtype))
        # (D, K) log P_i(abstain | m) of informative missingness, folded into W and b_h (see set_one_unit);
        # (0, K) when missing labels are ignorable.
        self.register_buffer("log_abstain", torch.zeros(0, k, device=device, dtype=torch.float64))

    @property
    def n_classes(self) -> int:
        return self.W.shape[0]

    @property
    def n_visible(self) -> int:
        return self.W.shape[2]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[3]

    @property
    def informative(self) -> bool:
        """Whether an abstention is evidence in this model (``log_abstain`` is set)."""
        return self.log_abstain.shape[0] > 0

    @torch.no_grad()
    def set_one_unit(self, logp: torch.Tensor, logpi: torch.Tensor, log_abstain=None) -> None:
        """Hold a one-unit (Dawid-Skene) fit: ``logp`` ``(K_l, K_m, D)``, ``logpi`` ``(K,)``, ``log_abstain`` ``(D, K)``.

        The abstention terms fold in exactly: a row's hidden logits are
        ``logpi[m] + sum_{i absent} a[i, m] + sum_{i present} logp[x_i, m, i]``
        ``= (logpi + sum_i a[i, :])[m] + sum_{i present} (logp[x_i, m, i] - a[i, m])``,
        so ``W = logp - a`` and ``b_h = logpi + sum_i a`` make the RBM's posterior the
        informative model's, at the cost of the present labels only.
        """
        if self.n_hidden != 1:
            raise ValueError("a one-unit fit needs hidden_dim=1")
        if log_abstain is not None:
            logp = logp - log_abstain.t().unsqueeze(0)
            logpi = logpi + log_abstain.sum(dim=0)
            self.log_abstain = log_abstain.detach().to(device=self.W.device, dtype=torch.float64).clone()
        else:
            self.log_abstain = torch.zeros(0, self.n_classes, device=self.W.device, dtype=torch.float64)
        self.W.copy_(logp.unsqueeze(-1).to(self.W.dtype))
        self.b_v.zero_()
        self.b_h.copy_(logpi.unsqueeze(0).to(self.b_h.dtype))

    def class_log_prior(self) -> torch.Tensor:
        """``(K,)`` log of the class prior of hidden unit 0 (the abstention terms taken back out of ``b_h``)."""
        b = self.b_h[0].detach().double()
        if self.informative:
            b = b - self.log_abstain.sum(dim=0)
        return torch.log_softmax(b, dim=0)

    def hidden_probs(self, data: LabelData) -> torch.Tensor:
        """``(N, H, K)`` p(h | v). Labels stored sparse: one-unit models through the E-step op, others
        through ``ell_hidden_probs`` on padded rows, a chunk of rows at a time."""
        if hasattr(data, "row_ptr") and self.n_hidden == 1:
            post = data.evidence_pass(self.W[..., 0].double(), self.b_h[0].double(), None, False, True)[3]
            return post.to(self.W.dtype).unsqueeze(1)
        if hasattr(data, "row_ptr") or hasattr(data, "voter"):
            return _by_padded_rows(data, lambda rows: ops.ell_hidden_probs(rows.voter, rows.values, self.W, self.b_h))
        fn = ops.hidden_probs_soft if data.soft else ops.hidden_probs
        return fn(data.values, self.W, self.b_h)

    def free_energy(self, data: LabelData) -> torch.Tensor:
        if hasattr(data, "row_ptr") or hasattr(data, "voter"):
            return _by_padded_rows(data, lambda rows: ops.ell_free_energy(rows.voter, rows.values, self.W, self.b_v,
                                                                          self.b_h))
        fn = ops.free_energy_soft if data.soft else ops.free_energy
        return fn(data.values, self.W, self.b_v, self.b_h)

    def gauge_masks(self):
        """Gradient masks fixing the first visible and first hidden state when ``H == 1``.

        With one hidden unit, adding a constant across visible states (or across
        hidden states) of a classifier's weights is absorbed by the biases, so one
        state of each is pinned; ``None`` when there is nothing to pin.
        """
        if self.n_hidden != 1:
            return None
        w = torch.ones_like(self.W)
        w[0] = 0
        w[:, 0] = 0
        bv = torch.ones_like(self.b_v)
        bv[:, 0] = 0
        bh = torch.ones_like(self.b_h)
        bh[:, 0] = 0
        return w, bv, bh


# Slots per chunk of padded rows the sparse scores gather at once (rows x longest row).
PADDED_SLOTS_PER_CHUNK = 1 << 22


def _by_padded_rows(data, score) -> torch.Tensor:
    """``score(rows)`` over padded rows: ``data`` itself if padded, else chunks of its rows gathered padded."""
    if hasattr(data, "voter") and not hasattr(data, "row_ptr"):
        return score(data)
    step = max(1, PADDED_SLOTS_PER_CHUNK // max(data.max_row_length(), 1))
    parts = [score(data.padded(torch.arange(i, min(i + step, data.n_rows), device=data.device)))
             for i in range(0, max(data.n_rows, 1), step)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]
