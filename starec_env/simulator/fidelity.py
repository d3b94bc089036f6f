"""How close the simulator is to the data it stands for.

Two views:

- *Replay*: the simulator replays every user's history length through its
  own choice model (sequential MNL over the catalogue) and rating model; the
  resulting rating histogram and item-popularity curve are compared with the
  data's.
- *Held-out behaviour* (:func:`heldout_fidelity`): on the offline protocol's
  held-out choices (each user's last positive, which a real-data simulator
  never saw), how well the simulator predicts what users actually chose:
  the NDCG of its oracle against the logged positive among sampled
  negatives, the log-likelihood of the choices, and the calibration of its
  click probabilities.
"""
from __future__ import annotations

import numpy as np

from starec_env.behaviour import consume_plackett_luce
from starec_env.data.model import Dataset
from starec_env.protocol import LeaveOneOut
from starec_env.resources import peak_rss_mib
from starec_env.simulator.choice import log_choice_probability

#: Equal-count bins of the click-probability reliability table.
CALIBRATION_BINS = 10
#: Slate shown when measuring the simulated click-through rate.
CTR_SLATE = 5


def rating_histogram(ratings: np.ndarray) -> list[float]:
    """Share of 1..5 stars (ratings rounded to the nearest star)."""
    stars = np.clip(np.rint(np.asarray(ratings, dtype=np.float64)), 1, 5).astype(np.int64)
    return (np.bincount(stars, minlength=6)[1:] / max(1, len(stars))).tolist()


def popularity_stats(items: np.ndarray, n_items: int) -> dict:
    """Gini of item interaction counts, share of the top 10 % items, share never consumed."""
    counts = np.sort(np.bincount(items, minlength=n_items).astype(np.float64))
    total = max(counts.sum(), 1.0)
    n = len(counts)
    gini = float((2.0 * np.arange(1, n + 1) @ counts) / (n * total) - (n + 1) / n)
    top = max(1, n // 10)
    return {
        "gini": gini,
        "top10_share": float(counts[-top:].sum() / total),
        "cold_share": float((counts == 0).mean()),
    }


def fidelity_report(dataset: Dataset, sim, seed: int = 0, max_users: int = 5000, protocol: LeaveOneOut | None = None) -> dict:
    """Simulated vs. data rating histogram and popularity curve, and the
    held-out behaviour figures of :func:`heldout_fidelity` under ``protocol``
    (default: the paper's, with ``seed``), as a plain dict."""
    rng = np.random.default_rng([seed, 0xF1DE])
    users = np.arange(dataset.n_users)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    lengths = np.diff(dataset.user_offsets)[users]
    pref, resp = sim.preference, sim.response
    bias = (resp.popularity_weight * resp.log_exposure).astype(np.float32)
    inv_t = np.float32(1.0 / resp.temperature)

    def logits(rows: np.ndarray) -> np.ndarray:
        return pref.full(users[rows]) * inv_t + bias

    chunk = max(1, min(2048, 2**22 // max(1, dataset.n_items)))
    rows, items = consume_plackett_luce(logits, len(users), dataset.n_items, lengths, rng, chunk)
    sim_ratings = resp.rate(sim.rating_utility(users[rows], items[:, None])[:, 0], rng)
    data_rows = np.isin(dataset.user_arr, users)
    data_hist = rating_histogram(dataset.rating_arr[data_rows])
    sim_hist = rating_histogram(sim_ratings)
    observed = sim.rating_utility(dataset.user_arr[data_rows], dataset.item_arr[data_rows][:, None])[:, 0]
    replay_hist = rating_histogram(resp.rate(observed, rng))
    return {
        "dataset": dataset.name,
        "source": pref.source,
        "users": int(len(users)),
        "rating_hist": {"data": data_hist, "simulated": sim_hist, "replayed": replay_hist},
        "rating_tv_distance": 0.5 * float(np.abs(np.subtract(data_hist, sim_hist)).sum()),
        "mean_rating": {"data": float(dataset.rating_arr[data_rows].mean()), "simulated": float(sim_ratings.mean())},
        "popularity": {
            "data": popularity_stats(dataset.item_arr[data_rows], dataset.n_items),
            "simulated": popularity_stats(items, dataset.n_items),
        },
        "utility_rating_spearman": _spearman(observed, dataset.rating_arr[data_rows]),
        "heldout": heldout_fidelity(dataset, sim, protocol or LeaveOneOut(dataset, seed=seed)),
        "fit": dict(sim.fit_stats),
        "peak_rss_mb": peak_rss_mib(),
    }


def format_fidelity(report: dict) -> str:
    """The terminal summary of a :func:`fidelity_report` (the full dict goes to a file)."""
    held, fit = report["heldout"], report["fit"]
    ndcg = {name: 100 * m["ndcg@10"] for name, m in held["ndcg"].items()}
    ll, pop = held["loglik"], report["popularity"]
    lines = [f"{report['dataset']}: {report['source']} simulator, {report['users']} users"]
    if "fit_s" in fit:
        choice = fit["choice"]
        lines.append(
            f"  fit {fit['fit_s']:.1f} s wall, {fit['fit_cpu_s']:.1f} s CPU (choice model {choice['fit_s']:.1f} s, {choice['epochs']} epochs, best "
            f"{choice['best_epoch']}; rating model {fit['rating']['fit_s']:.1f} s) on {fit['train_interactions']} "
            f"interactions, {fit['heldout_interactions']} held out"
        )
    if report.get("peak_rss_mb") is not None:
        lines.append(f"  peak RSS {report['peak_rss_mb']:.0f} MiB")
    lines += [
        f"  held-out choices ({held['users']} users, 1 positive among {held['candidates']} candidates, seed {held['seed']}):",
        f"    NDCG@10 x 100: oracle (choice) {ndcg['oracle_choice']:.2f}, oracle (utility) {ndcg['oracle_utility']:.2f}, "
        f"popularity {ndcg['popularity']:.2f}",
        f"    log-likelihood per choice (nats): {ll['catalogue']:.3f} over the catalogue (uniform {ll['uniform']:.3f}, "
        f"popularity {ll['popularity']:.3f}); {ll['candidates']:.3f} among the candidates "
        f"(uniform {ll['candidates_uniform']:.3f})",
        f"    click-probability calibration: ECE {held['calibration']['ece']:.4f} over all candidates, "
        f"{held['calibration']['top_choice']['ece']:.4f} for the top candidate",
        f"    simulated CTR, top-{held['ctr']['slate_size']} slate: oracle {held['ctr']['oracle_slate']:.3f}, "
        f"random {held['ctr']['random_slate']:.3f} (no-click logit {held['ctr']['no_click_logit']})",
        f"  replay: rating-histogram distance {report['rating_tv_distance']:.3f}; popularity Gini "
        f"{pop['data']['gini']:.3f} data vs {pop['simulated']['gini']:.3f} simulated; mean rating "
        f"{report['mean_rating']['data']:.2f} vs {report['mean_rating']['simulated']:.2f}",
    ]
    return "\n".join(lines)


def heldout_fidelity(dataset: Dataset, sim, protocol: LeaveOneOut) -> dict:
    """How well the simulator predicts the protocol's held-out choices.

    - ``ndcg``: NDCG/hit of rankings by the simulator's choice logit (its
      oracle), by its utility alone, and by training popularity (reference);
    - ``loglik``: mean log-probability (nats) of each held-out choice among
      the items the user had not consumed before it, beside the uniform and
      popularity-proportional choice models; ``candidates`` the same among
      the protocol's candidates;
    - ``calibration``: reliability of the click probabilities the simulator
      gives the candidates (MNL over them, no position bias, given a click):
      equal-count bins of predicted vs. observed click share and their
      expected calibration error, over all candidates and (``top_choice``)
      for each user's most likely candidate;
    - ``ctr``: the simulated click-through rate of a top-``CTR_SLATE`` slate
      ranked by the oracle and in random order (the full click model, with
      position bias and the no-click option).
    """
    start = getattr(sim, "heldout_start", None)
    if start is not None:
        seen = int((protocol.target_rows < start[protocol.users]).sum())
        if seen:
            raise ValueError(
                f"the simulator was fitted on {seen} of the protocol's held-out targets: its holdout threshold "
                f"({sim.fit_stats.get('holdout_threshold')}) differs from the protocol's positive_threshold "
                f"({protocol.positive_threshold}); set simulator.holdout_threshold to match"
            )
    batch, target = protocol.batch, protocol.target_pos
    choice = np.asarray(sim.choice_logit(batch.users, batch.candidates), dtype=np.float64)
    train_counts = np.bincount(protocol.split.interactions["item"].to_numpy(), minlength=dataset.n_items).astype(np.float64)
    rankings = {
        "oracle_choice": choice,
        "oracle_utility": np.asarray(sim.utility(batch.users, batch.candidates), dtype=np.float64),
        "popularity": train_counts[batch.candidates],
    }
    catalogue = _catalogue_loglik(dataset, sim, protocol, train_counts)
    prob = np.exp(choice - choice.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    rows = np.arange(len(target))
    return {
        "users": len(protocol),
        "candidates": int(batch.candidates.shape[1]),
        "seed": protocol.seed,
        "ndcg": {name: protocol.evaluate(scores) for name, scores in rankings.items()},
        "loglik": {
            **catalogue,
            "candidates": float(np.log(prob[rows, target]).mean()),
            "candidates_uniform": float(-np.log(batch.candidates.shape[1])),
        },
        "calibration": _calibration(prob, target),
        "ctr": _simulated_ctr(sim, batch.users, batch.candidates, choice, np.random.default_rng([protocol.seed, 0xC7])),
    }


def _catalogue_loglik(dataset: Dataset, sim, protocol: LeaveOneOut, train_counts: np.ndarray) -> dict:
    """Mean log-probability of the held-out choices over each user's not-yet-consumed items."""
    n_items = dataset.n_items
    off = dataset.user_offsets
    pop_logit = np.log1p(train_counts)
    totals = {"catalogue": 0.0, "uniform": 0.0, "popularity": 0.0}
    chunk = max(1, 2**22 // max(1, n_items))
    every = np.arange(n_items)
    for lo in range(0, len(protocol), chunk):
        users = protocol.users[lo:lo + chunk]
        ends = protocol.target_rows[lo:lo + chunk]
        targets = dataset.item_arr[ends]
        lens = ends - off[users]
        rows = np.repeat(off[users] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        before = np.zeros((len(users), n_items), bool)
        before[np.repeat(np.arange(len(users)), lens), dataset.item_arr[rows]] = True
        before[np.arange(len(users)), targets] = False
        logits = sim.choice_logit(users, np.broadcast_to(every, (len(users), n_items)))
        totals["catalogue"] += float(log_choice_probability(logits, targets, before).sum())
        totals["uniform"] -= float(np.log(n_items - before.sum(axis=1)).sum())
        pop = np.broadcast_to(pop_logit, before.shape)
        totals["popularity"] += float(log_choice_probability(pop, targets, before).sum())
    return {k: v / len(protocol) for k, v in totals.items()}


def _calibration(prob: np.ndarray, target: np.ndarray) -> dict:
    """Reliability of the click probabilities: over every candidate, and of each user's top candidate."""
    chosen = np.zeros(prob.shape, bool)
    rows = np.arange(len(target))
    chosen[rows, target] = True
    top = prob.argmax(axis=1)
    return {
        **_reliability(prob.ravel(), chosen.ravel()),
        "top_choice": _reliability(prob[rows, top], top == target),
    }


def _reliability(pred: np.ndarray, hit: np.ndarray) -> dict:
    """Equal-count bins of predicted probability vs. observed frequency, and the expected calibration error."""
    order = np.argsort(pred, kind="stable")
    bins, ece = [], 0.0
    for part in np.array_split(order, min(CALIBRATION_BINS, len(order))):
        p, o = float(pred[part].mean()), float(hit[part].mean())
        bins.append({"predicted": p, "observed": o, "count": int(len(part))})
        ece += len(part) / len(pred) * abs(p - o)
    return {"ece": ece, "bins": bins}


def _simulated_ctr(sim, users: np.ndarray, candidates: np.ndarray, choice: np.ndarray, rng: np.random.Generator) -> dict:
    """Expected click-through rate of the oracle's and of a random top-``CTR_SLATE`` slate."""
    size = min(CTR_SLATE, candidates.shape[1])
    out = {"slate_size": size, "no_click_logit": float(sim.response.no_click_logit)}
    for name, scores in (("oracle_slate", choice), ("random_slate", rng.random(choice.shape))):
        order = np.argsort(-scores, axis=1, kind="stable")[:, :size]
        slate = np.take_along_axis(candidates, order, axis=1)
        util = np.asarray(sim.utility(users, slate), dtype=np.float32)
        probs = sim.response.click_probabilities(sim.response.click_logits(util, slate))
        out[name] = float(1.0 - probs[:, -1].mean())
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    rx = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)
    ry = _average_ranks(np.asarray(y, dtype=np.float64))
    return float(np.corrcoef(rx, ry)[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (ratings have many ties)."""
    uniq, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inv]
