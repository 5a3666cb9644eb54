"""tandem serve's slot management on Gemma 3 270M: a client that leaves while waiting for a non-streamed
reply frees its slot, --context-shift with --keep goes past a full slot, --swap-space brings a slot's cells
back from host RAM, --cache-reuse keeps a run of cells at its positions, and -nocb starts a request only when running ones have finished. Every loop bounded."""
import concurrent.futures
import http.client
import json
import socket
import time

import pytest

from serve_util import Server


@pytest.fixture(scope="module")
def server(gemma_path):
    # One slot of 64 tokens: a long reply must shift, and each new prompt takes the slot of the last.
    s = Server(gemma_path, "-c", "64", "-np", "1", "--temp", "0", "--context-shift", "--keep", "2",
               "--swap-space", "0.01", "--cache-reuse", "4")
    yield s
    assert s.stop() == 0, "".join(s.log)


def wait_idle(server, seconds):
    deadline = time.time() + seconds
    while True:
        _, slots = server.request("GET", "/slots")
        if not any(s["is_processing"] for s in slots) or time.time() > deadline:
            return slots
        time.sleep(0.05)


def test_client_leaving_a_non_streamed_request_frees_its_slot(server):
    # 2000 tokens would hold the slot for a minute; the client closes once the slot is generating.
    body = json.dumps({"prompt": "Once upon a time", "n_predict": 2000, "ignore_eos": True}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.time() + 20
    while not any(s["is_processing"] and s["n_decoded"] > 0 for s in server.request("GET", "/slots")[1]):
        assert time.time() < deadline, "the request never started"
        time.sleep(0.02)
    sock.close()
    t0 = time.time()
    slots = wait_idle(server, 10)
    assert not any(s["is_processing"] for s in slots), slots
    assert time.time() - t0 < 3 and slots[0]["n_decoded"] < 2000
    status, r = server.request("POST", "/completion", {"prompt": "Hello", "n_predict": 2})
    assert status == 200 and r["tokens_predicted"] == 2


def test_context_shift_goes_past_a_full_slot(server):
    # 100 tokens through a slot of 64: without --context-shift the reply stops near 64 with "length".
    status, r = server.request("POST", "/completion", {"prompt": "The history of the world", "n_predict": 100,
                                                        "ignore_eos": True}, timeout=120)
    assert status == 200, r
    assert r["tokens_predicted"] == 100 and r["stop_type"] == "limit" and r["truncated"] is True
    _, slots = server.request("GET", "/slots")
    assert slots[0]["n_past"] < 64


def test_swap_space_brings_a_prompts_cells_back(server):
    a = "A long letter about the garden, the river, the old mill and the children who played there."
    b = "Numbers: one two three."
    first = server.request("POST", "/completion", {"prompt": a, "n_predict": 6})[1]
    server.request("POST", "/completion", {"prompt": b, "n_predict": 2})  # takes the one slot
    again = server.request("POST", "/completion", {"prompt": a, "n_predict": 6})[1]
    # Without the swap store only BOS would be shared with the slot's cells (prompt b's).
    assert again["tokens_cached"] == first["tokens_evaluated"] - 1, again
    assert again["content"] == first["content"]


def test_cache_reuse_keeps_a_run_at_its_positions(server):
    ids = server.request("POST", "/tokenize", {"content": "The cat sat on the warm mat by the door all day long.",
                                               "add_special": True})[1]["tokens"]
    other = server.request("POST", "/tokenize", {"content": " dog ran"})[1]["tokens"]
    first = server.request("POST", "/completion", {"prompt": ids, "n_predict": 2})[1]
    assert first["tokens_evaluated"] == len(ids)
    edited = ids[:1] + [other[0]] * 3 + ids[4:]  # three tokens after BOS changed, the length kept
    again = server.request("POST", "/completion", {"prompt": edited, "n_predict": 2})[1]
    # BOS, then positions 4 .. len - 2 (the last prompt token is decoded again for its logits).
    assert again["tokens_cached"] == 1 + len(ids) - 5, again


def test_no_cont_batching_waits_for_running_requests(gemma_path):
    s = Server(gemma_path, "-c", "256", "-np", "2", "--temp", "0", "-nocb")
    try:
        def ask(n):
            s.request("POST", "/completion", {"prompt": "Once upon a time", "n_predict": n, "ignore_eos": True})
            return time.time()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            long = pool.submit(ask, 60)
            deadline = time.time() + 30
            while not any(x["is_processing"] for x in s.request("GET", "/slots")[1]):
                assert time.time() < deadline, "the long request never started"
                time.sleep(0.02)
            short = pool.submit(ask, 2)  # arrives while the long one generates
            assert short.result(timeout=120) >= long.result(timeout=120)
        assert "no continuous batching (-nocb)" in "".join(s.log)
    finally:
        assert s.stop() == 0
