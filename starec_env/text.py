"""Text view of a user for language-model policies (not an observation space).

PettingZoo observations stay numeric and identical across agents; LLM agents
read this documented accessor instead: the user's profile, their history with
titles/genres/years/ratings, and the candidates with titles/genres/years.
Shared by the environment (``env.text_view(agent)``) and the offline protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from starec_env.data.model import Dataset

HistoryEntry = tuple[str, tuple[str, ...], int, float]
CandidateEntry = tuple[str, tuple[str, ...], int]


@dataclass(frozen=True)
class AgentTextView:
    """What an LLM agent may read about one user at one step.

    ``profile``: known demographics (``user_id`` always; ``age``, ``gender``,
    ``occupation`` when the data has them). ``history``: (title, genres,
    year, rating) oldest first. ``candidates``: (title, genres, year) in
    candidate order, aligned with ``candidate_items`` (dataset item indices)
    and ``candidate_descriptions`` (one line each, "" when unknown). A year
    of 0 means unknown.
    """

    user: int
    profile: dict
    history: list[HistoryEntry]
    candidates: list[CandidateEntry]
    history_items: list[int] = field(default_factory=list)
    candidate_items: list[int] = field(default_factory=list)
    candidate_descriptions: list[str] = field(default_factory=list)


def text_view(
    dataset: Dataset,
    user: int,
    history: np.ndarray,
    history_ratings: np.ndarray,
    candidates: np.ndarray,
) -> AgentTextView:
    """Build the view from dataset indices; padding (negative) history entries are dropped."""
    history = np.asarray(history, dtype=np.int64)
    history_ratings = np.asarray(history_ratings, dtype=np.float64)
    keep = history >= 0
    history, history_ratings = history[keep], history_ratings[keep]
    candidates = np.asarray(candidates, dtype=np.int64)
    rows = dataset.items.iloc[np.concatenate([history, candidates])]
    titles = rows["title"].tolist()
    genres = [tuple(g) for g in rows["genres"]]
    years = [int(y) for y in rows["year"]]
    descriptions = [str(d) for d in rows["description"]]
    n_hist = len(history)
    past = [
        (titles[k], genres[k], years[k], float(history_ratings[k])) for k in range(n_hist)
    ]
    cands = [(titles[k], genres[k], years[k]) for k in range(n_hist, len(titles))]
    return AgentTextView(
        user=int(user),
        profile=user_profile(dataset, int(user)),
        history=past,
        candidates=cands,
        history_items=history.tolist(),
        candidate_items=candidates.tolist(),
        candidate_descriptions=descriptions[n_hist:],
    )


def user_profile(dataset: Dataset, user: int) -> dict:
    """Known demographics of a user (unknown ones - 0 or "" - are left out)."""
    row = dataset.users.iloc[user]
    profile: dict = {"user_id": str(row["user_id"])}
    if int(row["age"]) > 0:
        profile["age"] = int(row["age"])
    for key in ("gender", "occupation"):
        value = row[key]
        if isinstance(value, str) and value:
            profile[key] = value
    return profile
