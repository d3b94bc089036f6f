"""Per-user text memory of the STARec agent.

Each user agent remembers, as plain text an LLM can read: the user's profile,
a bounded interaction history (items with metadata and the rating given) and
a *current preference description* that slow thinking rewrites after each
feedback. Every part is bounded, so a long simulation never makes prompts,
or the process, grow without limit.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from policies.llm.parsing import bound_text
from starec_env.configtools import config_from_dict
from starec_env.text import HistoryEntry as Entry  # (title, genres, year, rating)


@dataclass(frozen=True)
class MemoryConfig:
    """Bounds of a user's memory (loadable from a TOML table)."""

    max_history: int = 40
    max_preference_chars: int = 600

    def __post_init__(self) -> None:
        if self.max_history < 0 or self.max_preference_chars < 1:
            raise ValueError(
                f"memory bounds must be max_history >= 0 and max_preference_chars >= 1, got {self}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MemoryConfig":
        return config_from_dict(cls, data, "memory")


@dataclass
class UserMemory:
    """One user's memory. ``preference`` is what the prompts read
    (:func:`policies.llm.prompts.preference_of`)."""

    profile: dict
    history: deque = field(default_factory=deque)
    preference: str = ""
    updates: int = 0
    truncations: int = 0
    #: The warm-up walk this memory was built from (:attr:`policies.llm.warmup.Walk.key`).
    warm_key: str = ""


class MemoryStore:
    """Memories of many users, keyed by user index, all under one config."""

    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        self._users: dict[int, UserMemory] = {}

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user: int) -> bool:
        return int(user) in self._users

    def get(self, user: int, profile: dict | None = None) -> UserMemory:
        """The user's memory, created (with ``profile``) on first use."""
        user = int(user)
        if user not in self._users:
            self._users[user] = UserMemory(dict(profile or {}), deque(maxlen=self.config.max_history))
        return self._users[user]

    def sync_history(self, user: int, entries: list[Entry], profile: dict | None = None) -> UserMemory:
        """Take the environment's view of the user's interactions (the source of
        truth, which already holds every click); only the last ``max_history`` stay."""
        memory = self.get(user, profile)
        memory.history.clear()
        memory.history.extend(entries)
        return memory

    def set_preference(self, user: int, text: str) -> bool:
        """Replace the preference description, bounded; True if it was cut."""
        memory = self.get(user)
        memory.preference, cut = bound_text(text, self.config.max_preference_chars)
        memory.updates += 1
        memory.truncations += int(cut)
        return cut

    def stats(self) -> dict[str, float]:
        """Size figures for reports (users, updates, mean description length)."""
        mems = list(self._users.values())
        return {
            "memory_users": len(mems),
            "memory_updates": sum(m.updates for m in mems),
            "memory_truncations": sum(m.truncations for m in mems),
            "memory_mean_chars": sum(len(m.preference) for m in mems) / len(mems) if mems else 0.0,
        }
