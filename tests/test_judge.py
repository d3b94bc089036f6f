"""Judgement slots: exact slot positions, scores equal to a plain forward pass,
the listwise SFT that learns a toy task with a known optimum, and the
bf16/fp32 choice (tiny model, fp32 so results do not depend on the CPU)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from experiments.config import load_run_config  # noqa: E402
from policies.llm.judge import (  # noqa: E402
    JudgeConfig,
    JudgeEncoder,
    about,
    choice_targets,
    display_order,
    in_candidate_order,
    listwise_loss,
    note_marks,
    order_targets,
    shown_history,
    slot_scores,
)

torch.set_num_threads(1)


def view(genres: list[str], history: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        profile={"age": 25, "gender": "F"},
        history=[("Old Movie", ("Drama",), 1990, 4.0)] * history,
        candidates=[(f"Title {i}", (g,), 1990 + i) for i, g in enumerate(genres)],
        candidate_descriptions=[f"A witty, modern {g.lower()} film." for g in genres],
    )


@pytest.fixture(scope="module")
def encoder(tiny_backend):
    return JudgeEncoder(tiny_backend.tokenizer, JudgeConfig(history=2, description_words=2))


def test_slots_sit_right_after_each_candidate_line(encoder, tiny_backend):
    v = view(["Comedy", "Horror", "Drama"])
    msgs = encoder.messages(v, "Likes comedy.", ["p1 g2 s-", "p2 g1 s1", "p3 g3 s2"])
    prompt = encoder.encode(msgs)
    assert len(prompt.slots) == 3 and prompt.slots == sorted(prompt.slots) and prompt.slots[-1] == len(prompt.ids) - 1
    tok = tiny_backend.tokenizer
    for j, slot in enumerate(prompt.slots):
        text = tok.decode(prompt.ids[: slot + 1])
        assert text.endswith("->"), text[-40:]
        assert v.candidates[j][1][0] in text.rsplit("\n", 1)[-1]  # the line that ends at this slot is candidate j's
    user = msgs[-1]["content"]
    assert "Taste: Likes comedy." in user and "witty, modern" in user and "Title 0" in user
    assert encoder.messages(v, "", None)[-1]["content"].count("(none yet)") == 1
    with pytest.raises(ValueError, match="evidence has 1 entries but the view has 3 candidates"):
        encoder.messages(v, "", ["p1"])


def test_backend_slot_scores_equal_a_plain_forward_pass(encoder, tiny_backend):
    """The backend reuses the shared system-prompt prefix; the scores must not change."""
    prompts = [encoder.encode(encoder.messages(view(g), note)) for g, note in
               ((["Comedy", "Horror"], "a"), (["Drama", "War", "Crime"], "likes war"), (["Western"], ""))]
    got = tiny_backend.score_slots(prompts, encoder.answer_ids)
    model = tiny_backend.model
    for prompt, scores in zip(prompts, got):
        ids = torch.tensor([prompt.ids])
        with torch.no_grad():
            want = slot_scores(model, ids, None, torch.tensor([prompt.slots]), encoder.answer_ids)[0]
            logits = model(input_ids=ids).logits[0]
        np.testing.assert_allclose(scores, want.numpy(), rtol=1e-4, atol=1e-5)
        yes, no = encoder.answer_ids
        np.testing.assert_allclose(scores, (logits[prompt.slots, yes] - logits[prompt.slots, no]).numpy(), rtol=1e-4, atol=1e-4)
    assert tiny_backend.stats()["judge_cached_tokens"] > 0  # the shared prefix was run once


def test_history_rule_and_helpers():
    assert shown_history(10, "plain", 3, 2) == slice(7, 10)
    assert shown_history(10, "memory", 3, 2) == slice(5, 8)  # the memory stands for the last 2
    assert shown_history(10, "append", 3, 2) == slice(5, 10)  # ... which the ablation shows as lines
    assert shown_history(1, "memory", 3, 2) == slice(0, 0)
    assert about("An uplifting, quirky comedy film about cats.", 2) == "uplifting, quirky"
    assert about("", 3) == "" and about("The End.", 0) == ""
    p = choice_targets(np.array([[0.0, np.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.25, 0.75]])
    np.testing.assert_allclose(order_targets([2, 0, 1], 3, decay=0.5), np.array([0.5, 0.25, 1.0]) / 1.75)
    scores = torch.tensor([[2.0, 0.0, 5.0]])
    loss = listwise_loss(scores, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[True, True, False]]))
    assert loss.item() == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + 1)), rel=1e-5)  # the masked slot is ignored


def toy_rows(encoder, n: int, rng: np.random.Generator) -> tuple[list[dict], list, np.ndarray]:
    """5 candidates, one Comedy among other genres: the user always picks the Comedy."""
    others = ["Horror", "Drama", "War", "Crime", "Western", "Romance"]
    rows, prompts, targets = [], [], []
    for _ in range(n):
        genres = list(rng.choice(others, size=4, replace=False))
        pos = int(rng.integers(5))
        genres.insert(pos, "Comedy")
        prompt = encoder.encode(encoder.messages(view(genres, history=0), ""))
        t = np.zeros(5)
        t[pos] = 1.0
        rows.append({"input_ids": prompt.ids, "labels": [-100] * len(prompt.ids), "slots": prompt.slots,
                     "targets": t.tolist(), "kind": "judge"})
        prompts.append(prompt)
        targets.append(pos)
    return rows, prompts, np.array(targets)


def held_out_ndcg(backend_model, tokenizer, encoder, prompts, targets) -> float:
    from policies.llm.backend import LLMBackend
    from starec_env.metrics import ndcg_single, rank_of

    scores = np.stack(LLMBackend(backend_model.eval(), tokenizer).score_slots(prompts, encoder.answer_ids))
    return float(ndcg_single(rank_of(scores, targets), 10).mean())


def test_note_marks_read_the_memory_onto_each_candidate_line(tiny_backend):
    """Marks count what the note likes (+) and dislikes (-) of each candidate,
    whoever wrote the note; they appear only with a note and only when on."""
    note = "Likes drama and comedy; dislikes horror; picks witty ones. Not into war, but loves noir"
    marks = note_marks(note, [("Drama", "Horror"), ("Comedy",), ("Action",), ("War",), ("Film-Noir",), ("Noir",)],
                       ["witty, modern", "", "", "", "", "dark"])
    assert marks == ["++-", "+", "0", "-", "0", "+"]
    assert note_marks("Taste still unclear.", [("Drama",)], ["witty"]) == ["0"]
    v = view(["Comedy", "Horror", "Drama"])
    on = JudgeEncoder(tiny_backend.tokenizer, JudgeConfig(history=2, description_words=2, note_marks=True))
    lines = [ln for ln in on.messages(v, "Likes comedy; dislikes horror.", ["p1", "p2", "p3"])[-1]["content"].splitlines()
             if ln.endswith("->" + "\ue000")]
    assert [ln.split(" | note ")[1].split(" ->")[0] for ln in lines] == ["+", "-", "0"]
    assert " | note " not in on.messages(v, "", ["p1", "p2", "p3"])[-1]["content"]  # no memory yet: nothing to read
    off = JudgeEncoder(tiny_backend.tokenizer, JudgeConfig(history=2, description_words=2))
    assert " | note " not in off.messages(v, "Likes comedy.", None)[-1]["content"]
    # a stranger's note changes the marks, hence the prompt the slots read
    assert on.encode(on.messages(v, "Likes horror.", None)).ids != on.encode(on.messages(v, "Likes comedy.", None)).ids


def test_genre_order_lists_the_first_stage_ranking_and_maps_scores_back():
    from policies.rule_based import GenreOptions

    rng = np.random.default_rng(0)
    scores = {"genre": rng.random((4, 6)), "pop": rng.random((4, 6))}
    order = display_order("genre", scores, (4, 6))
    first = scores["genre"] + GenreOptions().pop_weight * scores["pop"]
    for r in range(4):
        assert sorted(order[r]) == list(range(6))
        assert list(first[r, order[r]]) == sorted(first[r], reverse=True)
    # slot scores that fall with the listed position give back the first stage's ranking
    back = np.stack([in_candidate_order(-np.arange(6.0), o) for o in order])
    assert (np.argsort(-back, axis=1, kind="stable") == order).all()
    assert (display_order("given", None, (2, 3)) == [[0, 1, 2], [0, 1, 2]]).all()
    with pytest.raises(ValueError, match="needs the genre and pop evidence"):
        display_order("genre", None, (1, 3))
    # the itemknn first stage: the candidates by similarity to the history
    knn = {"itemknn": rng.random((4, 6))}
    assert (np.take_along_axis(knn["itemknn"], display_order("itemknn", knn, (4, 6)), 1)
            == -np.sort(-knn["itemknn"], axis=1)).all()
    with pytest.raises(ValueError, match="needs the itemknn evidence"):
        display_order("itemknn", scores, (4, 6))
    with pytest.raises(ValueError, match="judge.order"):
        JudgeConfig(order="best")


@pytest.mark.slow
def test_listwise_sft_learns_a_toy_task_with_a_known_optimum(encoder, tmp_path):
    """The judge SFT (TRL SFTTrainer + listwise slot loss) lifts held-out NDCG
    from chance to near the optimum (1.0) on "the user always picks the comedy"."""
    from datasets import Dataset

    from experiments.train.sft import train_sft
    from policies.llm.models import load_model

    rng = np.random.default_rng(0)
    rows, _, _ = toy_rows(encoder, 48, rng)
    _, val_prompts, val_targets = toy_rows(encoder, 40, rng)
    cfg = load_run_config(preset="smoke", sets=["distill.max_steps=30", "distill.learning_rate=3e-3", "distill.batch_size=4",
                                                "distill.grad_accum=1", "distill.save_steps=30"])
    model, tok = load_model("tiny", threads=1, seed=0)
    before = held_out_ndcg(model, tok, encoder, val_prompts, val_targets)
    facts = train_sft(cfg, model, tok, Dataset.from_list(rows), tmp_path / "sft", answer_ids=encoder.answer_ids)
    trained, _ = load_model(str(tmp_path / "sft" / "model"), threads=1)
    after = held_out_ndcg(trained, tok, encoder, val_prompts, val_targets)
    assert facts["steps"] == 30
    assert before < 0.75 and after > 0.9, (before, after)


def test_bf16_is_chosen_only_where_the_hardware_computes_it(monkeypatch):
    from policies.llm import models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert models.use_bf16("auto", "cpu") is False  # emulated bf16 would be slower than fp32
    assert models.use_bf16("bf16", "cpu") is True and models.use_bf16("fp32", "cpu") is False
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert models.use_bf16("auto", "cpu") is True
    with pytest.raises(ValueError, match="precision must be one of"):
        models.use_bf16("fp8")
    from experiments.train import common

    smoke = load_run_config(preset="smoke")
    assert smoke.model.precision == "fp32"  # the test suite runs the same arithmetic on every CPU
    auto = replace(smoke, device="cpu", model=replace(smoke.model, precision="auto"))
    assert common.trainer_kwargs(auto, Path("unused"), 1)["bf16"] is True
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert common.trainer_kwargs(auto, Path("unused"), 1)["bf16"] is False
