"""Where the one-unit fit stops (``DEEM(anchor=...)``): at the majority vote's reading, or at the likelihood's maximum.

EM (``solver='exact'``) and variational Bayes (``'bayes'``) start from the
majority vote: the M-step at its posteriors estimates every voter's confusion
(and, under informative missingness, its rate of voting per class) as if the
majority vote were the truth, and the posterior under those estimates is a
weighted vote -- a voter counts by its estimated reliability. Iterating to
convergence then moves the hidden class to wherever the model's likelihood
is highest. That is the right move when the model holds (a crowd whose
workers err independently given the class), and the wrong one when it does
not: labeling functions written over the same features fire together, and
the latent class of a conditionally independent model then follows those
co-firing groups, or the number of votes on a row, instead of the class.

* ``'none'``: iterate to convergence (the maximum of the penalized
  likelihood, or of the evidence lower bound).
* ``'majority'``: stop at the M-step of the majority-vote start (no EM
  iteration): the model's reading of the majority vote, one update (the
  "one-step" estimator of Gao, Lu & Zhou 2016, optimal at a good start
  under the model, and robust when the model is wrong).
* ``'auto'``: ``'none'`` when a missing label is ignorable (crowds). When it is
  informative (labeling functions, often dependent by construction), ``'majority'``
  unless EM's converged fit, fitted too, passes the checks of
  :mod:`deem.anchor_checks`. Those ask whether the voters fire together beyond the
  model, whether rows differ in activity, and whether EM relabelled more rows than
  the anchored fit expects to get wrong. Hard labels only: soft labels stay anchored.

What was measured is in README ("Where the fit stops").
"""
from __future__ import annotations

from ._validation import check_choice

ANCHORS = ("auto", "majority", "none")


def check_anchor(value) -> str:
    return check_choice("anchor", value, ANCHORS, "'majority': the voters' parameters estimated once from the "
                        "majority vote; 'none': EM to convergence; 'auto': 'majority' under informative "
                        "missingness unless the converged fit passes its checks, 'none' under ignorable")


def decide_anchor(anchor: str, missing: str) -> str:
    """``'majority'`` or ``'none'``: the user's choice, or under ``'auto'`` the one for ``missing``."""
    if anchor != "auto":
        return anchor
    return "majority" if missing == "informative" else "none"
