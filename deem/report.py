"""``DEEM.report(path, predictions)``: one self-contained HTML page of what a fit learned (``deem[report]``).

The page opens offline: every figure is a PNG embedded as base64, with no script or style fetched from
anywhere. It shows, for the voters (annotators, classifiers, labeling functions):

* reliability ranked: each voter's skill (expected accuracy under the learned class prior, ``skill_``)
  with a 95% Wilson band from the number of labels it gave, its coverage and its abstention rate;
* confusion heat maps of the pooled confusion (label-weighted over the voters) and of the most and the
  least reliable voters;
* flags: a *spammer* (a G-test does not reject that its labels are independent of the true class), an
  *adversary* (its skill's whole band below chance, 1/K: wrong more often than random; with the classes it
  swaps);
* the consensus: its class balance and the histogram of its confidence (the top class's probability);
* agreement between the most active voters on the items both labelled; and the training curve.

matplotlib draws the figures (an optional extra: ``pip install 'deem[report]'``).
"""
from __future__ import annotations

import base64
import html
import io
from typing import List, Optional

import numpy as np

# Wilson interval's z for 95%; voters shown in the ranked chart (the best and the worst half each);
# voters in the agreement map.
Z95 = 1.96
RANKED_SHOWN = 40
AGREEMENT_SHOWN = 25


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the report draws with matplotlib: pip install 'deem[report]'") from None
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def wilson(p: np.ndarray, n: np.ndarray, z: float = Z95):
    """``(low, high)`` of the Wilson score interval of a proportion ``p`` out of ``n`` (``n = 0``: 0 to 1)."""
    n = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 1.0)
    centre = (p + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, low, 0.0), np.where(n > 0, high, 1.0)


def independence_p_value(confusion: np.ndarray, given: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``(D,)`` p-value of "a voter's label does not depend on the true class" (a G-test on its expected counts).

    A voter's expected counts are ``N_tl = n_i * prior_t * P_i(l | t)`` (``n_i`` the labels it gave); the
    statistic ``G = 2 sum N_tl log(N_tl / E_tl)``, ``E`` the counts under independence, is chi-square with
    ``(K - 1)^2`` degrees of freedom when the voter answers at random.
    """
    from scipy.stats import chi2

    k = confusion.shape[1]
    joint = given[:, None, None] * prior[None, :, None] * confusion  # (D, t, l)
    total = joint.sum(axis=(1, 2), keepdims=True)
    expected = joint.sum(axis=2, keepdims=True) * joint.sum(axis=1, keepdims=True) / np.maximum(total, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / np.maximum(expected, 1e-300)), 0.0)
    return chi2.sf(2.0 * terms.sum(axis=(1, 2)), df=max((k - 1) ** 2, 1))


def flags(confusion: np.ndarray, skill: np.ndarray, low: np.ndarray, high: np.ndarray, given: np.ndarray,
          prior: np.ndarray, level: float = 0.05) -> List[List[str]]:
    """Per voter, what is wrong with it (empty: nothing):

    * *spammer*: independence of its labels from the true class is not rejected at ``level``
      (``independence_p_value``): its answers cannot be told from random ones;
    * *adversary*: its skill's whole 95% band ``[low, high]`` lies below chance, 1/K: it is wrong more often
      than a random voter, so it steers to wrong classes; the classes it swaps (P(says s | true t) > 1/2,
      s != t) are named.
    """
    d, k, _ = confusion.shape
    p_random = independence_p_value(confusion, given, prior)
    out: List[List[str]] = []
    for i in range(d):
        found = []
        if p_random[i] > level:
            found.append(f"spammer: its answers cannot be told from random ones (p = {p_random[i]:.2f})")
        elif high[i] < 1.0 / k:
            swaps = [f"{t}->{int(confusion[i, t].argmax())}" for t in range(k)
                     if confusion[i, t].argmax() != t and confusion[i, t].max() > 0.5]
            found.append("adversary: below chance" + (f", swaps {', '.join(swaps)}" if swaps else ""))
        out.append(found)
    return out


def _agreement(dense: np.ndarray, voters: np.ndarray) -> np.ndarray:
    """``(V, V)`` share of the co-labelled items on which two voters gave the same label (NaN: none shared)."""
    sub = dense[:, voters]
    present = sub >= 0
    v = len(voters)
    out = np.full((v, v), np.nan)
    for a in range(v):
        both = present[:, a:a + 1] & present
        same = both & (sub[:, a:a + 1] == sub)
        counts = both.sum(axis=0)
        out[a] = np.where(counts > 0, same.sum(axis=0) / np.maximum(counts, 1), np.nan)
    return out


def write_report(model, path: str, predictions, names: Optional[List[str]] = None,
                 classes: Optional[List[str]] = None, title: str = "DEEM report") -> str:
    """Write the page for fitted ``model`` and the labels ``predictions`` it aggregates; returns ``path``."""
    from ._validation import check_labels, is_sparse

    plt = _require_matplotlib()
    data = check_labels(predictions, n_classes=model.n_classes_, n_classifiers=model.n_classifiers_)
    proba = model.predict_proba(predictions)
    proba = proba.cpu().numpy() if hasattr(proba, "cpu") else np.asarray(proba)
    k, d = model.n_classes_, model.n_classifiers_
    names = [str(x) for x in (names if names is not None else range(d))]
    classes = [str(x) for x in (classes if classes is not None else range(k))]
    skill = np.asarray(model.skill_, dtype=np.float64)
    coverage = np.asarray(model.coverage_, dtype=np.float64)
    abstain = np.asarray(model.abstain_rate_, dtype=np.float64)
    confusion = np.asarray(model.confusion_, dtype=np.float64)
    if is_sparse(data):
        given = data.labels_per_voter().cpu().numpy().astype(np.float64)
        dense = None if data.n_rows * max(d, 1) > (1 << 26) else data.to_dense().cpu().numpy()
    elif data.soft:
        given = (data.values.sum(dim=1) > 0).sum(dim=0).cpu().numpy().astype(np.float64)
        dense = np.where(data.values.sum(dim=1).cpu().numpy() > 0, data.values.argmax(dim=1).cpu().numpy(), -1)
    else:
        values = data.values.cpu().numpy()
        given, dense = (values >= 0).sum(axis=0).astype(np.float64), values
    low, high = wilson(skill, given)
    flagged = flags(confusion, skill, low, high, given, np.asarray(model._aligned_class_prior()))
    figures = []

    # 1. reliability, ranked
    order = np.argsort(-skill)
    shown = order if d <= RANKED_SHOWN else np.concatenate([order[:RANKED_SHOWN // 2], order[-RANKED_SHOWN // 2:]])
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.22 * len(shown))))
    y = np.arange(len(shown))[::-1]
    ax.barh(y, skill[shown], color=["#c0392b" if flagged[i] else "#2e86c1" for i in shown])
    ax.errorbar(skill[shown], y, xerr=[skill[shown] - low[shown], high[shown] - skill[shown]], fmt="none",
                ecolor="black", capsize=2, lw=0.8)
    ax.axvline(1.0 / k, color="grey", ls="--", lw=1, label=f"chance (1/{k})")
    ax.set_yticks(y)
    ax.set_yticklabels([names[i] for i in shown], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("skill: expected accuracy (95% Wilson band from the labels given); red: flagged")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Voters ranked by reliability" + ("" if d <= RANKED_SHOWN else
                                                    f" (the best and worst {RANKED_SHOWN // 2} of {d})"))
    figures.append(("reliability", _png(fig)))

    # 2. coverage and abstention
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(coverage, skill, c=abstain.mean(axis=1), cmap="viridis", s=18)
    ax.set_xlabel("coverage: share of the items labelled")
    ax.set_ylabel("skill")
    ax.set_title("Coverage against skill (colour: mean abstention rate)")
    figures.append(("coverage", _png(fig)))

    # 3. confusion heat maps: pooled, most and least reliable
    pooled = (confusion * given[:, None, None]).sum(axis=0) / max(given.sum(), 1.0)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (label, mat) in zip(axes, (("pooled (label-weighted)", pooled),
                                       (f"most reliable: {names[order[0]]}", confusion[order[0]]),
                                       (f"least reliable: {names[order[-1]]}", confusion[order[-1]]))):
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("label given")
        ax.set_ylabel("true class")
        ticks = range(k)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(classes, fontsize=7, rotation=90 if k > 6 else 0)
        ax.set_yticklabels(classes, fontsize=7)
        if k <= 10:
            for t in range(k):
                for s_ in range(k):
                    ax.text(s_, t, f"{mat[t, s_]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if mat[t, s_] > 0.6 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8)
    figures.append(("confusion", _png(fig)))

    # 4. the consensus: class balance and confidence
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    consensus = proba.argmax(axis=1)
    axes[0].bar(classes, np.bincount(consensus, minlength=k) / max(len(consensus), 1), color="#2e86c1")
    axes[0].set_title("Consensus class balance")
    axes[1].hist(proba.max(axis=1), bins=20, range=(1.0 / k, 1.0), color="#5d6d7e")
    axes[1].set_title("Confidence of the consensus (top class probability)")
    figures.append(("consensus", _png(fig)))

    # 5. agreement between the most active voters
    if dense is not None and d > 1:
        active = np.argsort(-given)[:AGREEMENT_SHOWN]
        agree = _agreement(dense, active)
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        im = ax.imshow(agree, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(active)))
        ax.set_yticks(range(len(active)))
        ax.set_xticklabels([names[i] for i in active], fontsize=6, rotation=90)
        ax.set_yticklabels([names[i] for i in active], fontsize=6)
        ax.set_title(f"Agreement on co-labelled items ({len(active)} most active voters)")
        fig.colorbar(im, ax=ax, shrink=0.8)
        figures.append(("agreement", _png(fig)))

    # 6. training curve
    history = getattr(model, "history_", {}) or {}
    loss = history.get("loss", []) if isinstance(history, dict) else list(history)
    if loss:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(loss) + 1), loss, marker="o", ms=3)
        ax.set_xlabel("epoch" if "lr" in history else "convergence check")
        ax.set_ylabel("loss")
        ax.set_title(f"Training curve (solver {model.solver_})")
        figures.append(("training", _png(fig)))

    rows = "".join(
        f"<tr><td>{rank + 1}</td><td>{html.escape(names[i])}</td><td>{skill[i]:.3f}</td>"
        f"<td>{low[i]:.3f}&ndash;{high[i]:.3f}</td><td>{int(given[i])}</td><td>{coverage[i]:.3f}</td>"
        f"<td>{abstain[i].mean():.3f}</td><td>{html.escape('; '.join(flagged[i]))}</td></tr>"
        for rank, i in enumerate(order))
    n_flagged = sum(1 for f in flagged if f)
    images = "".join(f'<figure id="fig-{key}"><img alt="{key}" src="data:image/png;base64,{b64}"></figure>'
                     for key, b64 in figures)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
figure{{margin:1.5em 0}}img{{max-width:100%}}</style></head>
<body data-figures="{len(figures)}">
<h1>{html.escape(title)}</h1>
<p>{data.n_rows} items, {d} voters, {k} classes; solver {html.escape(str(model.solver_))}, missing labels read as
{html.escape(str(getattr(model, 'missing_', '')))}. {n_flagged} voter(s) flagged.</p>
{images}
<h2>Voters</h2>
<table><tr><th>rank</th><th>voter</th><th>skill</th><th>95% band</th><th>labels</th><th>coverage</th>
<th>abstention</th><th>flags</th></tr>{rows}</table>
<script>
// Set once every figure has decoded: a headless browser (the tests) reads it back.
window.addEventListener("load", function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  document.body.setAttribute("data-rendered", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".html.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
