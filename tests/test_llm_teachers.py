"""Teachers and distillation: oracle determinism and honesty, the filter +
rethink loop, the HTTP teacher against a loopback server, and teacher tasks
from the simulator."""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from experiments.config import DistillSection
from experiments.train.distill.filter import FilterConfig, check_trace
from experiments.train.distill.loop import DistillConfig, distill
from experiments.train.distill.samples import teacher_samples
from experiments.train.rollout import States
from policies.base import PolicyContext
from policies.llm.clients import HTTPChatBackend, TeacherError
from policies.llm.evidence import EvidenceBuilder
from policies.llm.parsing import parse_ranking
from policies.llm.prompts import TEMPLATE_DIR
from policies.llm.teachers import LLMTeacher, OracleTeacher, TeacherSample, genre_taste, make_teacher
from policies.registry import make_policy
from tests.test_llm_prompts import make_view


def samples(n: int = 12, seed: int = 0) -> list[TeacherSample]:
    rng = np.random.default_rng(seed)
    view = make_view()
    return [
        TeacherSample(view=view, key=k, memory="Likes comedies.", utilities=rng.normal(size=5), target=int(rng.integers(5)))
        for k in range(n)
    ]


def test_genre_taste_from_visible_ratings():
    liked, disliked = genre_taste(make_view().history)
    assert liked[:2] == ["Animation", "Comedy"] and "Horror" in disliked and "Action" in disliked


def test_oracle_ranks_by_true_utility_and_cites_only_visible_evidence():
    teacher = OracleTeacher(seed=3)
    batch = samples()
    texts = teacher.generate(batch, [s.prompt() for s in batch], [None] * len(batch))
    words = re.compile(r"[A-Za-z][A-Za-z'-]+")
    bank = set(words.findall((TEMPLATE_DIR / "oracle_phrases.toml").read_text(encoding="utf-8").lower()))
    titles = {f"[{cid}] {t}" for cid, (t, _g, _y) in zip("ABCDE", make_view().candidates)}
    for sample, text in zip(batch, texts):
        parsed = parse_ranking(text, sample.ids, expect_think=True)
        assert parsed.format_score == 1.0 and len(parsed.reasons) == 5
        assert parsed.order == list(np.argsort(-sample.utilities, kind="stable"))
        # Only evidence from the prompt: no utility numbers; every word comes from the prompt or the phrase bank.
        assert "utilit" not in text.lower() and not any(f"{u:.2f}" in text for u in sample.utilities)
        prompt = " ".join(m["content"] for m in sample.prompt())
        assert set(words.findall(text.lower())) <= bank | set(words.findall(prompt.lower()))
        assert set(re.findall(r"\[[A-E]\] [A-Z][a-z]+(?: Hard)?", parsed.think)) <= titles


def test_oracle_is_deterministic_per_seed_with_varied_wording():
    batch = samples()
    chats = [s.prompt() for s in batch]
    a = OracleTeacher(seed=1).generate(batch, chats, [None] * 12)
    b = OracleTeacher(seed=1).generate(batch, chats, [None] * 12)
    c = OracleTeacher(seed=2).generate(batch, chats, [None] * 12)
    assert a == b and a != c
    assert len({t.split(".")[1] for t in a}) > 1  # wording varies across samples
    # Per-sample determinism: a sample's text does not depend on its batch.
    assert OracleTeacher(seed=1).generate(batch[5:6], chats[5:6], [None]) == a[5:6]


class Scripted:
    """A teacher answering from a script per (sample key, attempt); records the chats it got."""

    def __init__(self, script: dict[int, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[int, list[dict]]] = []

    def generate(self, batch, chats, rethinks):
        out = []
        for sample, chat, rethink in zip(batch, chats, rethinks):
            attempt = 0 if rethink is None else rethink.attempt
            self.calls.append((sample.key, chat))
            out.append(self.script[sample.key][min(attempt, len(self.script[sample.key]) - 1)])
        return out




def good(target: int) -> str:
    rest = [c for c in "ABCDE" if c != "ABCDE"[target]]
    return f"<think>They enjoy comedy and dislike horror.</think>\n1. [{'ABCDE'[target]}] - a comedy\n" + "\n".join(
        f"{i}. [{c}] - weaker" for i, c in enumerate(rest, 2)
    )


def test_filter_names_each_problem():
    s = samples(1)[0]
    t = "ABCDE"[s.target]
    assert check_trace(good(s.target), s, FilterConfig()).problems == ()
    assert check_trace(good(s.target).split("</think>")[1], s, FilterConfig()).problems == ("missing_reasoning",)
    assert "missing_ranking" in check_trace(f"<think>likes comedy</think>\nRanking: {t}", s, FilterConfig()).problems
    assert check_trace(good(s.target).replace("They enjoy comedy and dislike horror", "Hmm"), s, FilterConfig()).problems == (
        "no_preference_keywords",
    )
    last = "<think>likes comedy</think>\nRanking: " + " > ".join([c for c in "ABCDE" if c != t] + [t])
    check = check_trace(last, s, FilterConfig())
    assert check.problems == ("low_ndcg",) and check.ndcg == pytest.approx(1 / np.log2(6))
    assert check_trace(last, s, FilterConfig(min_ndcg=0.3)).problems == ()


def test_distill_rethinks_with_targeted_feedback_then_keeps_or_drops():
    batch = samples(3)
    t0 = batch[0].target
    teacher = Scripted(
        {
            0: [good(t0).split("</think>")[1], good(t0)],  # no reasoning, fixed on the rethink
            1: [f"<think>likes comedy</think>\nRanking: {'ABCDE'[batch[1].target]}"],  # never complete
            2: [good(batch[2].target)],  # fine at once
        }
    )
    result = distill(teacher, batch, DistillConfig(rethink=2))
    assert [(t.sample.key, t.attempts) for t in result.traces] == [(2, 1), (0, 2)]
    assert result.dropped == [(1, ("missing_ranking",))]
    assert result.stats == {
        "samples": 3, "kept": 2, "kept_first_try": 1, "kept_after_rethink": 1, "dropped": 1,
        "problems": {"missing_ranking": 3, "missing_reasoning": 1},
    }
    # The rethink conversation: original prompt, the flawed answer, then targeted feedback.
    retry = [chat for key, chat in teacher.calls if key == 0][1]
    assert retry[:2] == batch[0].prompt() and retry[2]["role"] == "assistant"
    assert "no reasoning" in retry[3]["content"]
    missing_feedback = [chat for key, chat in teacher.calls if key == 1][1][3]["content"]
    assert "missing: " in missing_feedback and "ABCDE"[batch[1].target] not in missing_feedback.split("missing: ")[1].split(")")[0]
    # The kept trace pairs the original prompt (what the student sees) with the final answer.
    assert result.traces[1].prompt == batch[0].prompt() and result.traces[1].completion == good(t0)


def test_oracle_rethink_promotes_the_actual_choice():
    s = samples(1)[0]
    worst = int(np.argmin(s.utilities))
    s = TeacherSample(view=s.view, key=0, utilities=s.utilities, target=worst)
    result = distill(OracleTeacher(seed=0), [s], DistillConfig(rethink=1))
    assert result.stats["kept_after_rethink"] == 1 and result.stats["problems"] == {"low_ndcg": 1}
    assert parse_ranking(result.traces[0].completion, s.ids).order[0] == worst
    assert distill(OracleTeacher(seed=0), [s], DistillConfig(rethink=0)).stats["dropped"] == 1


def test_kept_traces_pair_the_student_prompt_with_the_answer():
    batch = samples(4)
    result = distill(OracleTeacher(seed=0), batch, DistillConfig(filter=FilterConfig(min_ndcg=0.0)))
    traces = result.traces
    assert len(traces) == 4
    assert [m["role"] for m in traces[0].prompt] == ["system", "user"] and traces[0].completion.startswith("<think>")
    assert traces[0].prompt == batch[0].prompt()


def test_settings_carry_the_names_of_the_distill_section():
    cfg = DistillConfig.from_section(DistillSection(rethink=3, min_ndcg=0.7))
    assert cfg.rethink == 3 and cfg.filter.min_ndcg == 0.7 and cfg.filter.keywords == FilterConfig().keywords
    with pytest.raises(ValueError, match="unknown teacher"):
        make_teacher("gpt")
    assert isinstance(make_teacher("oracle", seed=1), OracleTeacher)


# ------------------------------------------------------------- HTTP teacher
class _Handler(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: fails with 503 the first time, then answers."""

    def do_POST(self):  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))
        if len(self.server.requests) == 1 and self.server.flaky:
            self._send(503, {"error": "busy"})
        elif body["model"] == "bad":
            self._send(400, {"error": {"message": "unknown model"}})
        elif body["model"] == "echo":  # a server that quotes the request's secrets back
            self._send(401, {"error": f"bad credentials {self.headers.get('Authorization')} for {self.path}"})
        else:
            last = body["messages"][-1]["content"]
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": f"Ranking: A > B ({len(last)})",
                                                      "reasoning_content": "likes comedy"}}]})

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.flaky = [], True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_http_teacher_against_loopback_server(server, monkeypatch):
    monkeypatch.setenv("STAREC_TEACHER_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1/")
    monkeypatch.setenv("STAREC_TEACHER_MODEL", "teacher-32b")
    monkeypatch.setenv("STAREC_TEACHER_API_KEY", "sk-test")
    waits = []
    backend = HTTPChatBackend.from_env(sleep=waits.append, backoff=0.5, timeout=5)
    teacher = LLMTeacher(backend)
    batch = samples(2)
    chats = [s.prompt() for s in batch]
    replies = teacher.generate(batch, chats, [None, None])
    assert waits == [0.5]  # one retry after the 503
    assert replies[0] == f"<think>\nlikes comedy\n</think>\nRanking: A > B ({len(chats[0][-1]['content'])})"
    path, headers, body = server.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "teacher-32b" and body["messages"] == chats[1]


def test_http_teacher_errors_are_clear(server):
    server.flaky = False
    with pytest.raises(TeacherError, match="refused the request.*HTTP 400.*unknown model"):
        HTTPChatBackend(f"http://127.0.0.1:{server.server_port}", "bad", sleep=lambda s: None)([[{"role": "user", "content": "x"}]])
    assert len(server.requests) == 1  # a 4xx is not retried
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    waits = []
    with pytest.raises(TeacherError, match="failed after 3 attempts"):
        HTTPChatBackend(f"http://127.0.0.1:{port}", "m", retries=2, timeout=2, sleep=waits.append)([[{"role": "user", "content": "x"}]])
    assert waits == [1.0, 2.0]


def test_http_teacher_needs_configuration(monkeypatch):
    monkeypatch.delenv("STAREC_TEACHER_BASE_URL", raising=False)
    with pytest.raises(TeacherError, match="STAREC_TEACHER_BASE_URL"):
        HTTPChatBackend.from_env()
    for bad in ("ftp://host/v1", "host/v1", "http://host:port/v1", "http://[::1/v1"):
        with pytest.raises(TeacherError, match="STAREC_TEACHER_BASE_URL must be an http"):
            HTTPChatBackend(bad, "m")


def test_http_teacher_keeps_the_query_and_hides_credentials(server):
    """Azure-style base URLs carry a query; keys in the URL, the header or the reply never reach a message."""
    server.flaky = False
    port = server.server_port
    chat = [[{"role": "user", "content": "x"}]]
    azure = HTTPChatBackend(f"http://127.0.0.1:{port}/openai/deployments/gpt4?api-version=2024-02-01", "m", "k" * 12)
    assert azure(chat)[0].startswith("<think>")
    assert server.requests[-1][0] == "/openai/deployments/gpt4/chat/completions?api-version=2024-02-01"
    leaky = HTTPChatBackend(f"http://alice:hunter2pw@127.0.0.1:{port}/v1/?api_key=sk-querysecret99", "echo", sleep=lambda s: None)
    with pytest.raises(TeacherError) as err:
        leaky(chat)
    message = str(err.value)
    path, headers, _ = server.requests[-1]
    assert path == "/v1/chat/completions?api_key=sk-querysecret99" and headers["Authorization"].startswith("Basic ")
    assert "HTTP 401" in message and "api_key=***" in message
    for secret in ("hunter2pw", "sk-querysecret99", headers["Authorization"].split()[1]):
        assert secret not in message
    keyed = HTTPChatBackend(f"http://127.0.0.1:{port}/v1", "echo", "sk-live-abcdef123456", sleep=lambda s: None)
    with pytest.raises(TeacherError) as err:
        keyed(chat)
    assert "sk-live-abcdef123456" not in str(err.value) and "Bearer ***" in str(err.value)
    assert leaky.describe() == {"endpoint": f"http://127.0.0.1:{port}/v1/chat/completions?api_key=***", "model": "echo"}


def test_http_teacher_is_recorded_in_config_json(server, monkeypatch, tmp_path):
    from experiments.run import main

    monkeypatch.setenv("STAREC_TEACHER_BASE_URL", f"http://bob:pw-secret-1@127.0.0.1:{server.server_port}/v1?key=hidden-value")
    monkeypatch.setenv("STAREC_TEACHER_MODEL", "teacher-32b")
    args = ["--stage", "eval", "--teacher", "http", "--policies", "pop", "--users", "5", "--no-online", "--no-progress",
            "--set", "data.options.n_users=40", "--set", "data.options.n_items=30", "--out", str(tmp_path)]
    assert main(args) == 0
    text = (tmp_path / "config.json").read_text()
    record = json.loads(text)["facts"]["teacher"]
    assert record == {"teacher": "http", "endpoint": f"http://127.0.0.1:{server.server_port}/v1/chat/completions?key=***",
                      "model": "teacher-32b"}
    assert "pw-secret-1" not in text and "hidden-value" not in text


# ------------------------------------------------ end to end on the simulator
def test_distill_from_protocol_on_synthetic_world():
    from starec_env.data import load_dataset
    from starec_env.protocol import LeaveOneOut
    from starec_env.simulator import build_simulator

    ds = load_dataset("synthetic", seed=0, n_users=60, n_items=80)
    ctx = PolicyContext(ds, seed=0, simulator=build_simulator(ds, seed=0))
    protocol = LeaveOneOut(ds, n_negatives=9, n_users=6, seed=0)
    evidence = EvidenceBuilder(ctx)
    evidence.fit(protocol.split)
    utilities = make_policy("oracle", ctx).score(protocol.batch)
    batch = teacher_samples(ds, evidence, States(protocol.batch, protocol.target_pos, utilities))
    assert batch[0].evidence and batch[0].evidence[0].startswith("popularity #") and batch[0].items[protocol.target_pos[0]] == protocol.targets[0]
    result = distill(OracleTeacher(seed=0), batch, DistillConfig(rethink=1))
    assert result.stats["kept"] == 6  # the rethink repairs every low-NDCG trace
    for trace in result.traces:
        assert "evidence:" in trace.prompt[1]["content"] and trace.ndcg >= 0.5
    assert result.traces[0].sample.user == int(protocol.users[0])


def test_local_teacher_with_tiny_model_goes_through_the_filter():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    teacher = make_teacher("local:tiny", max_new_tokens=8)
    batch = samples(2)
    result = distill(teacher, batch, DistillConfig(rethink=1))
    # A random model writes no valid trace: both are sent back once, then dropped.
    assert result.stats["kept"] == 0 and result.stats["dropped"] == 2
    stats = teacher.chat.backend.stats()
    assert stats["think_calls"] >= 4 and stats["think_completion_tokens"] > 0
