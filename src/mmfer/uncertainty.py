"""How sure a score is: speaker-level bootstrap intervals, and paired tests between two models on the same
test utterances.

Why a *speaker-level* bootstrap: the utterances of one speaker are not independent draws (same voice, same
session, often the same emotion). Resampling utterances alone treats a talkative speaker's 300 turns as 300
pieces of evidence and narrows the interval; resampling speakers first, then utterances within each drawn
speaker (a two-stage cluster bootstrap), keeps the between-speaker variation in the interval.

Every resample is a vector of counts per test utterance, so a resampled metric is the metric of a
count-weighted confusion matrix: B resamples cost B small matrix products, not B re-scorings. The same count
vectors serve both runs of a paired comparison (the pairing), and every seed of a run (a multi-seed run's
score is the mean of its seeds' scores, resample by resample).
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("wa", "ua", "f1", "wf1")
N_BOOT = 1000
LEVEL = 0.95


def resample_counts(groups, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) counts: speakers drawn with replacement, then each drawn speaker's utterances with
    replacement (as many as it has, once per time it was drawn). One group: an utterance bootstrap."""
    groups = np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((n_boot, len(groups)), np.int32)
    drawn = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)  # (B, G)
    for g in range(len(names)):
        idx = np.flatnonzero(inverse == g)
        counts[:, idx] = rng.multinomial(drawn[:, g] * len(idx), np.full(len(idx), 1 / len(idx)))
    return counts


def by_seed(p, classes: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """A run's pooled test predictions (a table with utt_id, true, pred and seed columns) as (true labels,
    one predicted-label vector per seed, utterance ids), every seed in the first seed's utterance order."""
    from mmfer.errors import MmferError

    index = {c: i for i, c in enumerate(classes)}
    key = [None if v is None or v != v else int(v) for v in (p["seed"] if "seed" in p else [None] * len(p))]
    parts = [p[[k == s for k in key]].drop_duplicates("utt_id").set_index("utt_id") for s in dict.fromkeys(key)]
    ids = parts[0].index.tolist()
    y = np.array([index[c] for c in parts[0]["true"]])
    preds = []
    for part in parts:
        if set(part.index) != set(ids):
            raise MmferError("the seeds of this run were tested on different utterances")
        preds.append(np.array([index[c] for c in part.loc[ids, "pred"]]))
    return y, preds, ids


def _cells(y_true, y_pred, k: int) -> np.ndarray:
    """(n, k*k) one-hot of each utterance's confusion cell."""
    cell = np.asarray(y_true) * k + np.asarray(y_pred)
    out = np.zeros((len(cell), k * k), np.float32)
    out[np.arange(len(cell)), cell] = 1
    return out


def confusion_of(y_true, y_pred, k: int) -> np.ndarray:
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return m


def scores_of(conf: np.ndarray) -> dict[str, np.ndarray]:
    """WA, UA, macro-F1, weighted F1 and per-class recall of confusion matrices (..., k, k); classes absent
    from truth and prediction are left out of the means (scikit-learn's definitions). ``training.metrics.scores``
    is this on one matrix."""
    conf = np.asarray(conf, np.float64)
    support, predicted = conf.sum(-1), conf.sum(-2)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present, used = support > 0, (support > 0) | (predicted > 0)
    total = np.maximum(support.sum(-1), 1)
    return {"wa": tp.sum(-1) / total,
            "ua": (recall * present).sum(-1) / np.maximum(present.sum(-1), 1),
            "f1": (f1 * used).sum(-1) / np.maximum(used.sum(-1), 1),
            "wf1": (f1 * support).sum(-1) / total,
            "recall": recall}


def boot_scores(y_true, preds: list, k: int, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric under each resample (B,), averaged over the runs in ``preds`` (a run's seeds), plus the
    point value of the unresampled predictions (key ``point``)."""
    ones = np.ones((1, counts.shape[1]), np.float32)
    boot: dict[str, list] = {}
    point: dict[str, list] = {}
    for pred in preds:
        cells = _cells(y_true, pred, k)
        for target, w in ((boot, counts.astype(np.float32)), (point, ones)):
            for m, v in scores_of((w @ cells).reshape(len(w), k, k)).items():
                target.setdefault(m, []).append(v)
    out = {m: np.mean(v, axis=0) for m, v in boot.items()}
    out["point"] = {m: np.mean(v, axis=0)[0] for m, v in point.items()}
    return out


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def intervals(y_true, preds: list, groups, k: int, n_boot: int = N_BOOT, level: float = LEVEL,
              seed: int = 0) -> dict:
    """Percentile intervals of WA, UA, macro-F1 and weighted F1 of pooled test predictions (``preds``: one
    label vector per seed), speaker-level bootstrap."""
    b = boot_scores(y_true, preds, k, resample_counts(groups, n_boot, seed))
    out = {m: {"value": float(b["point"][m]), **dict(zip(("low", "high"), interval(b[m], level)))}
           for m in METRICS}
    return {**out, "level": level, "n_boot": n_boot, "seed": seed, "speakers": int(len(set(map(str, groups)))),
            "utterances": int(len(y_true)), "seeds": len(preds),
            "resampled": "speakers with replacement, then utterances within each drawn speaker"}


def paired(y_true, preds_a: list, preds_b: list, groups, k: int, n_boot: int = N_BOOT, level: float = LEVEL,
           seed: int = 0) -> dict:
    """A - B for each metric and each class's recall: the point difference, its percentile interval, and a
    two-sided p-value (the share of centred resampled differences at least as far from 0 as the observed
    one, +1 smoothed). Both runs see the same resamples."""
    counts = resample_counts(groups, n_boot, seed)
    a, b = boot_scores(y_true, preds_a, k, counts), boot_scores(y_true, preds_b, k, counts)
    out = {}
    for m in METRICS:
        d, obs = a[m] - b[m], float(a["point"][m] - b["point"][m])
        lo, hi = interval(d, level)
        extreme = np.abs(d - obs) >= abs(obs) - 1e-12
        out[m] = {"a": float(a["point"][m]), "b": float(b["point"][m]), "diff": obs, "low": lo, "high": hi,
                  "p": float((1 + extreme.sum()) / (1 + n_boot))}
    d = a["recall"] - b["recall"]
    obs = a["point"]["recall"] - b["point"]["recall"]
    lo, hi = np.quantile(d, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
    out["recall"] = [{"a": float(ra), "b": float(rb), "diff": float(o), "low": float(l_), "high": float(h)}
                     for ra, rb, o, l_, h in zip(a["point"]["recall"], b["point"]["recall"], obs, lo, hi)]
    return out


def sign_flip(diffs, exact_up_to: int = 16, n_random: int = 20000, seed: int = 0) -> float:
    """Two-sided permutation (sign-flip) test of per-fold differences: the share of sign assignments whose
    mean is at least as far from 0 as the observed mean. Exact up to 16 folds; 5 folds cannot go below
    2/32 = 0.0625, which is why the bootstrap over utterances is reported beside it."""
    d = np.asarray(diffs, float)
    if len(d) == 0:
        return float("nan")
    obs = abs(d.mean())
    if len(d) <= exact_up_to:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(n_random, len(d)))
    return float((np.abs((signs * d).mean(1)) >= obs - 1e-12).mean())


def mcnemar(right_a, right_b) -> dict:
    """McNemar's exact test on utterance correctness: only the discordant utterances count (b: A right and
    B wrong; c: the reverse); two-sided binomial p at 1/2."""
    ra, rb = np.asarray(right_a, bool), np.asarray(right_b, bool)
    b, c = int((ra & ~rb).sum()), int((~ra & rb).sum())
    n = b + c
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p": 1.0}
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n if n <= 1000 else _normal_tail(b, c)
    return {"a_only": b, "b_only": c, "p": float(min(1.0, 2 * tail))}


def _normal_tail(b: int, c: int) -> float:
    """One-sided tail of the continuity-corrected normal approximation (many discordant utterances)."""
    z = (abs(b - c) - 1) / math.sqrt(b + c)
    return 0.5 * math.erfc(z / math.sqrt(2))
