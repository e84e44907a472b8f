"""Epoch soup (``train.soup``): the best epochs' weights kept, and averaged greedily while validation does
not fall ("model soups", Wortsman et al. 2022, within one run: epochs of one run lie in one basin, so their
average is a flatter point; validation decides, so it is never worse there than the best epoch alone)."""

from __future__ import annotations

import torch

from mmfer.models.inference import infer
from mmfer.training.metrics import scores


def epoch_rank(epoch: dict) -> tuple[float, float]:
    """How epochs compare on validation: the objective's score, then the lower loss."""
    return epoch["score"], -epoch["loss"]


def keep(kept: list[dict], here: dict, n: int) -> bool:
    """Whether an epoch is among the ``n`` best so far (then the weakest kept one is dropped)."""
    if len(kept) < n:
        return True
    worst = min(kept, key=epoch_rank)
    if epoch_rank(here) <= epoch_rank(worst):
        return False
    kept.remove(worst)
    return True


def greedy_soup(model, kept: list[dict], best: dict, val, device, n_classes: int,
                objective: str) -> tuple[list[int], float]:
    """From the best epoch, add the next best while the averaged weights do not score lower on the
    validation part. Leaves the chosen weights in ``model``; returns their epochs and validation score."""
    others = sorted((d for d in kept if d["epoch"] != best["epoch"]), key=epoch_rank, reverse=True)
    chosen, states, score = [best["epoch"]], [best["state"]], epoch_rank(best)
    for cand in others:
        trial = average_states(states + [cand["state"]])
        model.load_state_dict(trial)
        out = infer(model, val, device)
        s = (scores(val.labels, out["probs"].argmax(1), n_classes)[objective], -out["loss"])
        if s >= score:
            chosen, states, score = chosen + [cand["epoch"]], states + [cand["state"]], s
    model.load_state_dict(average_states(states))
    return chosen, score[0]


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of floating-point weights (buffers of other types from the first)."""
    if len(states) == 1:
        return states[0]
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
