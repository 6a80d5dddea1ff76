"""Tests for `lstm-mt serve`: answers against the Python API, every limit and bad input (a JSON
error naming the field, and the server still answering after it), the batching queue, and a
real server process stopped by SIGTERM with a request in flight."""

from __future__ import annotations

import importlib.util
import json
import signal
import threading
import time
import urllib.request
from concurrent.futures import Future

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'lstm-mt[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from lstm_mt.errors import LstmMtError  # noqa: E402
from lstm_mt.inspection import trace_sentence  # noqa: E402
from lstm_mt.search import SearchConfig  # noqa: E402
from lstm_mt.serve import Limits, ServeConfig, main  # noqa: E402
from lstm_mt.serve.app import create_app, field_path  # noqa: E402
from lstm_mt.serve.batching import DynamicBatcher, QueueFull  # noqa: E402
from lstm_mt.serve.local import LocalServer  # noqa: E402
from lstm_mt.serve.schemas import TranslateRequest  # noqa: E402
from lstm_mt.serve.service import TranslationService  # noqa: E402
from lstm_mt.translate import Translator  # noqa: E402

torch.set_num_threads(1)

LIMITS = Limits(
    max_body_bytes=20_000,
    max_sentences=6,
    max_chars=400,
    max_subwords=40,
    max_beam_size=8,
    max_len_a=3.0,
    max_len_b=50,
    max_gate_sentences=2,
)
GOOD = {"sentences": ["Ein Hund rennt."]}


def service_for(checkpoint, **options) -> TranslationService:
    """A service for the tiny checkpoint with the test limits (``options``: more ServeConfig fields)."""
    return TranslationService.from_config(ServeConfig(checkpoint=str(checkpoint.path), limits=LIMITS, **options))


@pytest.fixture(scope="module")
def translator(tiny_checkpoint) -> Translator:
    return Translator.from_checkpoint(tiny_checkpoint.path)


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    with TestClient(create_app(service_for(tiny_checkpoint))) as client:
        yield client


def assert_still_serving(client) -> None:
    response = client.post("/v1/translate", json=GOOD)
    assert response.status_code == 200, response.text
    assert len(response.json()["translations"]) == 1


# --- answers -------------------------------------------------------------------------------


def test_translations_equal_the_python_api_in_input_order(client, translator, tiny_checkpoint):
    sentences = [*tiny_checkpoint.training_sources[:4], "", tiny_checkpoint.training_sources[7]]
    response = client.post("/v1/translate", json={"sentences": sentences, "beam_size": 4, "nbest": 3, "alpha": 1.0})
    assert response.status_code == 200
    body = response.json()
    assert body["options"] == {"beam_size": 4, "alpha": 1.0, "max_len_a": 1.5, "max_len_b": 10, "nbest": 3}
    expected = translator.translate_nbest(sentences, SearchConfig(beam_size=4, alpha=1.0, nbest=3))
    assert len(body["translations"]) == len(sentences)
    for result, nbest in zip(body["translations"], expected):
        assert [c["text"] for c in result["nbest"]] == [t.text for t in nbest]
        assert [c["score"] for c in result["nbest"]] == pytest.approx([t.score for t in nbest], abs=1e-6)
        assert (result["text"], result["score"]) == (result["nbest"][0]["text"], result["nbest"][0]["score"])
        assert "attention" not in result and "gates" not in result
    assert body["translations"][4] == {
        "text": "",
        "score": 0.0,
        "nbest": [{"text": "", "score": 0.0}] * 3,
    }  # n for n-best


def test_defaults_come_from_the_server_config(client, translator, tiny_checkpoint):
    sentence = tiny_checkpoint.training_sources[5]
    body = client.post("/v1/translate", json={"sentences": [sentence]}).json()
    assert body["options"] == {"beam_size": 5, "alpha": 0.6, "max_len_a": 1.5, "max_len_b": 10, "nbest": 1}
    assert body["translations"][0]["text"] == translator.translate([sentence])[0]


def test_attention_and_gates_of_greedy_search_equal_lstm_mt_inspect(client, translator, tiny_checkpoint):
    """Greedy: the gates recorded along the answer equal those `inspect` records during the search."""
    sentence = tiny_checkpoint.training_sources[2]
    request = {"sentences": [sentence], "beam_size": 1, "attention": True, "gates": True}
    result = client.post("/v1/translate", json=request).json()["translations"][0]
    trace = trace_sentence(translator, sentence)
    assert result["text"] == trace.translation
    assert result["source_pieces"] == trace.src_pieces
    assert result["target_pieces"] == trace.tgt_pieces
    np.testing.assert_allclose(result["attention"], trace.attention, atol=1e-5)
    assert [layer["name"] for layer in result["gates"]] == [layer.name for layer in trace.layers]
    for answered, recorded in zip(result["gates"], trace.layers):
        for key in ("i", "f", "g", "o", "c", "h"):
            units = recorded.arrays[key].shape[1]
            assert answered[key]["units"] == list(range(units))
            np.testing.assert_allclose(answered[key]["values"], recorded.arrays[key], atol=1e-5, err_msg=key)
        np.testing.assert_allclose(answered["c_norm"], np.linalg.norm(recorded.arrays["c"], axis=1), atol=1e-5)


def test_gate_units_are_the_most_varying_ones(client, tiny_checkpoint):
    sentence = tiny_checkpoint.training_sources[3]
    full, top = (
        client.post(
            "/v1/translate", json={"sentences": [sentence], "beam_size": 3, "gates": True, "gate_units": units}
        ).json()["translations"][0]
        for units in (0, 3)
    )
    assert "attention" not in top and top["source_pieces"] == full["source_pieces"]
    for every, chosen in zip(full["gates"], top["gates"]):
        assert chosen["c_norm"] == every["c_norm"]
        for key in ("i", "f", "o"):
            values = np.array(every[key]["values"])
            variance = values.var(axis=0)
            assert len(chosen[key]["units"]) == 3
            assert sorted(variance[chosen[key]["units"]], reverse=True) == pytest.approx(sorted(variance)[::-1][:3])
            np.testing.assert_array_equal(chosen[key]["values"], values[:, chosen[key]["units"]])


def test_beam_gates_follow_the_beam_answer_not_greedy(client, translator, tiny_checkpoint):
    """Where beam search's best differs from greedy, the gate steps are labelled by the beam output."""
    for sentence in tiny_checkpoint.training_sources:
        greedy = translator.translate([sentence], beam_size=1)[0]
        beam = translator.translate([sentence], beam_size=5)[0]
        if greedy != beam:
            break
    else:
        pytest.skip("beam search agrees with greedy search on every training sentence")
    result = client.post("/v1/translate", json={"sentences": [sentence], "gates": True}).json()["translations"][0]
    assert result["text"] == beam
    decoder = [layer for layer in result["gates"] if layer["side"] == "decoder"]
    assert all(len(layer["f"]["values"]) == len(result["target_pieces"]) for layer in decoder)


def test_empty_sentence_with_attention_and_gates(client):
    body = client.post("/v1/translate", json={"sentences": ["  ", "Ein Hund."], "attention": True, "gates": True})
    blank = body.json()["translations"][0]
    assert blank["text"] == "" and blank["attention"] == [] and blank["gates"] == [] and blank["source_pieces"] == []


def test_info_and_health(client, tiny_checkpoint):
    info = client.get("/v1/info").json()
    assert info["languages"] == {"source": "de", "target": "en"}
    tokenizer = tiny_checkpoint.tokenizer
    assert info["vocabulary"] == {"source": tokenizer.src_vocab_size, "target": tokenizer.tgt_vocab_size}
    assert info["model"]["parameters"] == tiny_checkpoint.model.num_parameters()
    assert info["model"]["config"]["decoder_hidden"] == 64
    assert info["checkpoint"]["step"] == 160
    assert info["decoding"]["beam_size"] == 5 and info["limits"]["max_sentences"] == LIMITS.max_sentences
    assert client.get("/v1/health").json() == {"status": "ok", "queued_sentences": 0}


def test_openapi_schema_has_the_request_with_examples(client):
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["TranslateRequest"]
    assert request["examples"][0]["sentences"]
    assert "gates" in request["properties"] and request["additionalProperties"] is False
    assert "422" in schema["paths"]["/v1/translate"]["post"]["responses"]


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert "http" not in client.get("/static/app.js").text.replace("http://www.w3.org/2000/svg", "")


# --- limits and bad input ------------------------------------------------------------------

JSON = {"content-type": "application/json"}
BAD_REQUESTS = {
    # name: (body bytes, headers, status, field)
    "invalid JSON": (b'{"sentences": ["Ein Hund",', JSON, 400, "body"),
    "non-UTF-8 bytes": ('{"sentences": ["Ein Hund läuft"]}'.encode("latin-1"), JSON, 400, "body"),
    "not sent as JSON": (b'{"sentences": ["Ein Hund."]}', {"content-type": "text/plain"}, 415, "body"),
    "a list, not an object": (b'["Ein Hund."]', JSON, 422, "body"),
    "sentences missing": (b'{"beam_size": 2}', JSON, 422, "sentences"),
    "sentences a string": (b'{"sentences": "Ein Hund."}', JSON, 422, "sentences"),
    "a number as sentence": (b'{"sentences": ["Ein Hund.", 7]}', JSON, 422, "sentences[1]"),
    "empty list": (b'{"sentences": []}', JSON, 422, "sentences"),
    "NUL character": (b'{"sentences": ["Ein", "Hund\\u0000rennt"]}', JSON, 422, "sentences[1]"),
    "control character": (b'{"sentences": ["Ein \\u001b[31mHund"]}', JSON, 422, "sentences[0]"),
    "lone surrogate": (b'{"sentences": ["Ein \\ud800 Hund"]}', JSON, 422, "sentences[0]"),
    "10,000-character token": (json.dumps({"sentences": ["x" * 10_000]}).encode(), JSON, 422, "sentences[0]"),
    "too many subwords": (
        json.dumps({"sentences": ["ok", " ".join(["qzx"] * 60)]}).encode(),
        JSON,
        422,
        "sentences[1]",
    ),
    "too many sentences": (json.dumps({"sentences": ["Hund."] * 7}).encode(), JSON, 422, "sentences"),
    "unknown option": (b'{"sentences": ["Hund."], "beam": 3}', JSON, 422, "beam"),
    "beam_size as string": (b'{"sentences": ["Hund."], "beam_size": "5"}', JSON, 422, "beam_size"),
    "beam_size as float": (b'{"sentences": ["Hund."], "beam_size": 5.0}', JSON, 422, "beam_size"),
    "beam_size 0": (b'{"sentences": ["Hund."], "beam_size": 0}', JSON, 422, "beam_size"),
    "beam_size over the limit": (b'{"sentences": ["Hund."], "beam_size": 9}', JSON, 422, "beam_size"),
    "nbest over beam_size": (b'{"sentences": ["Hund."], "beam_size": 2, "nbest": 3}', JSON, 422, "nbest"),
    "negative alpha": (b'{"sentences": ["Hund."], "alpha": -0.5}', JSON, 422, "alpha"),
    "alpha NaN": (b'{"sentences": ["Hund."], "alpha": NaN}', JSON, 422, "alpha"),
    "alpha infinite": (b'{"sentences": ["Hund."], "alpha": Infinity}', JSON, 422, "alpha"),
    "max_len_a over the limit": (b'{"sentences": ["Hund."], "max_len_a": 1e308}', JSON, 422, "max_len_a"),
    "max_len_b over the limit": (b'{"sentences": ["Hund."], "max_len_b": 1000000}', JSON, 422, "max_len_b"),
    "attention not a bool": (b'{"sentences": ["Hund."], "attention": "yes"}', JSON, 422, "attention"),
    "negative gate_units": (b'{"sentences": ["Hund."], "gates": true, "gate_units": -1}', JSON, 422, "gate_units"),
    "gates for too many": (b'{"sentences": ["a", "b", "c"], "gates": true}', JSON, 422, "gates"),
    "body over the limit": (json.dumps({"sentences": ["Hund. " * 4000]}).encode(), JSON, 413, "body"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_request_is_a_json_error_naming_the_field(client, name):
    body, headers, status, field = BAD_REQUESTS[name]
    response = client.post("/v1/translate", content=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["field"] == field
    assert answer["error"].startswith(f"{field}: ") and "\n" not in answer["error"]
    assert_still_serving(client)


def test_body_over_the_limit_without_content_length(client):
    """A chunked body (no Content-Length) is counted as it arrives."""
    chunks = (b'{"sentences": ["' + b"Hund " * 1000 + b'"]}' for _ in range(5))
    response = client.post("/v1/translate", content=chunks, headers=JSON)
    assert response.status_code == 413 and response.json()["field"] == "body"
    assert_still_serving(client)


def test_unknown_path_and_method(client):
    assert client.get("/v1/nothing").status_code == 404
    response = client.get("/v1/translate")
    assert response.status_code == 405 and response.json()["error"]


def test_field_path():
    assert field_path(["sentences", 2]) == "sentences[2]"
    assert field_path(["beam_size"]) == "beam_size"
    assert field_path(["a", 0, "b"]) == "a[0].b"


def test_full_queue_answers_503_with_retry_after(tiny_checkpoint):
    service = service_for(tiny_checkpoint, max_queue_sentences=8, retry_after_s=3)
    client = TestClient(create_app(service))  # no `with`: the decoding thread is not started yet
    waiting = service.submit(TranslateRequest(sentences=["Ein Hund."] * 6))
    response = client.post("/v1/translate", json={"sentences": ["Ein Mann.", "Eine Frau.", "Ein Kind."]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3" and response.json()["field"] == "queue"
    assert client.get("/v1/health").json()["queued_sentences"] == 6
    service.start()
    assert len(waiting.result(timeout=60)["translations"]) == 6
    service.close()


def test_decoding_failure_is_a_500_and_the_server_goes_on(tiny_checkpoint, monkeypatch):
    service = service_for(tiny_checkpoint)
    with TestClient(create_app(service)) as client:
        real = service.translator.translate_nbest
        monkeypatch.setattr(service.translator, "translate_nbest", lambda *a, **k: 1 / 0)
        response = client.post("/v1/translate", json=GOOD)
        assert response.status_code == 500 and "ZeroDivisionError" in response.json()["error"]
        monkeypatch.setattr(service.translator, "translate_nbest", real)
        assert_still_serving(client)


# --- batching ------------------------------------------------------------------------------


def test_concurrent_requests_are_decoded_as_one_batch(tiny_checkpoint, translator, monkeypatch):
    batches = []
    real_run = TranslationService.run
    monkeypatch.setattr(TranslationService, "run", lambda self, jobs: batches.append(len(jobs)) or real_run(self, jobs))
    service = service_for(tiny_checkpoint)
    sentences = tiny_checkpoint.training_sources[:6]
    futures = [service.submit(TranslateRequest(sentences=[s], beam_size=3)) for s in sentences[:5]]
    other = service.submit(TranslateRequest(sentences=[sentences[5]], beam_size=1))  # other options: own batch
    service.start()
    try:
        answers = [f.result(timeout=60)["translations"][0]["text"] for f in futures]
        assert answers == translator.translate(sentences[:5], beam_size=3)
        assert (
            other.result(timeout=60)["translations"][0]["text"] == translator.translate([sentences[5]], beam_size=1)[0]
        )
    finally:
        service.close()
    assert batches == [5, 1]


def run_recorder(batches: list, fail_on: str | None = None):
    def run(jobs):
        batches.append([job.payload for job in jobs])
        if any(job.payload == fail_on for job in jobs):
            raise RuntimeError(f"failed on {fail_on}")
        return [f"done {job.payload}" for job in jobs]

    return run


def test_batcher_groups_by_key_caps_cost_and_routes_results():
    batches: list = []
    batcher = DynamicBatcher(run_recorder(batches), wait_s=0.0, max_cost=10, max_queued=100)
    futures = {
        name: batcher.submit(key, 1, cost, name)
        for name, key, cost in [("a", "k1", 4), ("b", "k2", 1), ("c", "k1", 4), ("d", "k1", 4), ("e", "k1", 1)]
    }
    batcher.start()
    assert {name: f.result(timeout=10) for name, f in futures.items()} == {n: f"done {n}" for n in futures}
    batcher.close()
    # the oldest job leads; same key only; a job that would pass the cost cap waits for the next batch
    assert batches == [["a", "c", "e"], ["b"], ["d"]]


def test_batcher_waits_for_company_until_the_cost_cap():
    batches: list = []
    batcher = DynamicBatcher(run_recorder(batches), wait_s=600.0, max_cost=6, max_queued=100)
    batcher.start()
    first = batcher.submit("k", 1, 3, "a")
    second = batcher.submit("k", 1, 3, "b")  # reaches the cap: no need to wait the 600 s
    assert (first.result(timeout=30), second.result(timeout=30)) == ("done a", "done b")
    batcher.close()
    assert batches == [["a", "b"]]


def test_batcher_failure_reaches_every_job_of_the_batch_and_the_worker_goes_on():
    batches: list = []
    batcher = DynamicBatcher(run_recorder(batches, fail_on="bad"), wait_s=0.0, max_cost=100, max_queued=100)
    failing = [batcher.submit("k", 1, 1, name) for name in ("ok", "bad")]
    batcher.start()
    for future in failing:
        with pytest.raises(RuntimeError, match="failed on bad"):
            future.result(timeout=10)
    assert batcher.submit("k", 1, 1, "later").result(timeout=10) == "done later"
    batcher.close()


def test_batcher_queue_bound_and_close_drains():
    batcher = DynamicBatcher(run_recorder([]), wait_s=0.0, max_cost=100, max_queued=5)
    queued = [batcher.submit("k", 2, 1, "a"), batcher.submit("k", 3, 1, "b")]
    with pytest.raises(QueueFull, match="5 sentences are waiting"):
        batcher.submit("k", 1, 1, "c")
    assert batcher.queued == 5
    batcher.start()
    batcher.close(timeout=30)
    assert [f.result(timeout=0) for f in queued] == ["done a", "done b"]
    with pytest.raises(QueueFull, match="shutting down"):
        batcher.submit("k", 1, 1, "d")


# --- the command ---------------------------------------------------------------------------


def test_config_errors_name_the_key(tiny_checkpoint):
    with pytest.raises(LstmMtError, match="checkpoint must be set"):
        main([])
    with pytest.raises(LstmMtError, match="limits.max_sentences=0: must be an integer >= 1"):
        main([f"checkpoint={tiny_checkpoint.path}", "limits.max_sentences=0"])
    with pytest.raises(LstmMtError, match="search.beam_size=20: above limits.max_beam_size=16"):
        main([f"checkpoint={tiny_checkpoint.path}", "search.beam_size=20"])
    with pytest.raises(LstmMtError, match="checkpoint not found"):
        main(["checkpoint=/nonexistent/model.pt"])


def test_missing_extra_is_a_one_line_error_naming_the_install(tiny_checkpoint, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real_find_spec(name, *a)
    )
    with pytest.raises(LstmMtError, match=r"^lstm-mt serve needs uvicorn: pip install 'lstm-mt\[serve\]'$"):
        main([f"checkpoint={tiny_checkpoint.path}"])


def test_sigterm_finishes_the_request_in_flight(tiny_checkpoint, translator):
    """The request waits 2 s in the batching queue; SIGTERM arrives meanwhile; it is still answered."""
    sentence = tiny_checkpoint.training_sources[1]
    with LocalServer(tiny_checkpoint.path, "batch_wait_ms=2000", "log_level=warning") as server:
        answer: Future = Future()

        def ask() -> None:
            request = urllib.request.Request(
                server.url + "v1/translate", json.dumps({"sentences": [sentence]}).encode(), JSON
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    answer.set_result((response.status, json.load(response)))
            except Exception as error:
                answer.set_exception(error)

        threading.Thread(target=ask, daemon=True).start()
        in_flight = False
        while not (in_flight or answer.done()):  # wait until the request is queued
            with urllib.request.urlopen(server.url + "v1/health", timeout=30) as response:
                in_flight = json.load(response)["queued_sentences"] == 1
            time.sleep(0.02)
        server.terminate()
        status, body = answer.result(timeout=120)
        # uvicorn >= 0.29 ends by re-raising the signal after its graceful shutdown; older ones exit 0
        assert server.stop() in (0, -signal.SIGTERM), server.log()
        assert "Traceback" not in server.log()
    assert in_flight, "the request was answered before SIGTERM: nothing was tested"
    assert status == 200
    assert body["translations"][0]["text"] == translator.translate([sentence])[0]
