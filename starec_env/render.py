"""Text rendering ("ansi" / "human" modes): one user's slate, click and rating as a readable frame.

Every env form renders through :func:`render` so the modes mean the same
everywhere: ``"ansi"`` returns the frame as a string, ``"human"`` prints it
and returns None, ``None`` renders nothing.
"""
from __future__ import annotations

import numpy as np

from starec_env.errors import EnvError, check_choice

RENDER_MODES = ("human", "ansi")
_TITLE_WIDTH = 44


def check_render_mode(render_mode: str | None) -> str | None:
    """The constructors' ``render_mode`` check: None or one of :data:`RENDER_MODES`."""
    return check_choice("render_mode", render_mode, (None, *RENDER_MODES))


def frame(batched, row: int, label: str) -> str:
    """The frame of agent ``row`` of a :class:`~starec_env.batched.BatchedEnv`: last slate or current candidates."""
    ds = batched.dataset
    titles, genres = ds.items["title"].to_numpy(), ds.items["genres"].to_numpy()
    live = int(batched.alive.sum())
    head = f"STARec | {label} | episode step {int(batched.counters.steps[row])} | {live}/{batched.n_agents} users live"
    last = batched.last
    lines = [head]

    def item_line(mark: str, pos: int, item: int, note: str = "") -> str:
        title = str(titles[item])[:_TITLE_WIDTH]
        return f"{mark} {pos:>2}. {title:<{_TITLE_WIDTH}} {'|'.join(genres[item])[:28]:<28}{note}"

    if last is None:
        lines.append("  no step yet; candidates offered:")
        lines += [item_line(" ", k + 1, int(i)) for k, i in enumerate(batched.batch.candidates[row][:5])]
        return "\n".join(lines)
    fb = last.feedback
    clicked, rating = int(fb.clicked[row]), float(fb.rating[row])
    lines.append("  last slate (best first):")
    for k, item in enumerate(np.asarray(fb.shown[row]).tolist()):
        note = f"  <- clicked, rated {rating:g}" if item == clicked else ""
        lines.append(item_line(">" if note else " ", k + 1, item, note))
    outcome = "no click" if clicked < 0 else f"clicked {str(titles[clicked])[:_TITLE_WIDTH]!r}, rating {rating:g}"
    status = "left" if last.terminated[row] else "truncated" if last.truncated[row] else "stays"
    lines.append(f"  {outcome}; reward {float(last.rewards[row]):.3g}; user {status}")
    return "\n".join(lines)


def render(render_mode: str | None, batched, row: int, label: str) -> str | None:
    """Render agent ``row`` in ``render_mode`` (see module doc)."""
    if render_mode is None:
        return None
    if batched.state is None:
        raise EnvError("call reset() before render()")
    text = frame(batched, row, label)
    if render_mode == "human":
        print(text)
        return None
    return text
