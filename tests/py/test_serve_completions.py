"""/v1/completions beyond the basics, on Gemma 3 270M with the real `openai` client: echo with logprobs
scores the prompt (checked against `tandem perplexity` on the same tokens), prompts mixing strings and
token lists as llama-server takes them, n above the free slots (queued) and above the queue (400), and a
POST without a body length answered at once. One server (2 slots of 512 tokens) serves the module."""
import json
import math
import re
import socket
import time

import pytest

from conftest import run_tandem

openai = pytest.importorskip("openai")

from serve_util import Server  # noqa: E402

MAX_QUEUE = 8
# Plain English prose, varied enough that the model is unsure of it (a perplexity near 10, not 1), and
# long enough for two perplexity chunks of 128 tokens.
TEXT = (
    "The lighthouse keeper rose before dawn, as he had for thirty years, and climbed the narrow stairs with a "
    "kettle in one hand and a ledger in the other. Fog had rolled in from the west during the night, thick "
    "enough to hide the rocks below, and the lamp needed trimming. He wrote the date, the wind and the state of "
    "the sea in small careful letters, then paused to listen. Somewhere beyond the harbour a bell was ringing, "
    "slow and uneven, the way a buoy rings when the swell is heavy. His daughter had left for the city in the "
    "spring; her letters arrived on Thursdays with the grocer's boat, full of trams, theatres and the price of "
    "bread. He kept them in a tin box beside the barometer. By noon the fog had lifted, and a fishing boat with "
    "a red sail appeared, tacking against the tide toward the northern channel. He watched it through the brass "
    "telescope until it rounded the point, made a note of the time, and went down to mend the fence the goats "
    "had broken again. In the evening the wind turned east, the barometer fell, and the gulls came inland early. "
    "He filled the oil tank, checked the spare wicks, and sat by the window with a bowl of soup, reading her "
    "latest letter for the third time while the beam swept slowly over the dark water.")


@pytest.fixture(scope="module")
def server(gemma_path):
    s = Server(gemma_path, "-c", "1024", "-np", "2", "-n", "8", "--temp", "0", "--max-queue", MAX_QUEUE,
               "-a", "gemma-test")
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def tokenize(server, text, add_special):
    status, body = server.request("POST", "/tokenize", {"content": text, "add_special": add_special})
    assert status == 200, body
    return body["tokens"]


def test_echo_logprobs_score_the_prompt_as_perplexity_does(server, client, gemma_path, tmp_path):
    """OpenAI's legacy echo + logprobs: the prompt's tokens come first, the first with null. Reference:
    `tandem perplexity -c 128 --chunks 1` scores tokens 65..127 of its first chunk (BOS first) from one
    decode of those 128 tokens; the sum of the echoed log-probabilities of the same tokens must equal
    -63 ln(PPL) within 1e-4 relative (measured: 1e-6, what PPL's 4 printed decimals allow). Perplexity runs
    with the server's default --batch-invariant on: the other kernels round differently (PPL 52.456 against
    52.483 on this text), which is not what this compares."""
    n_ctx = 128
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    proc = run_tandem("perplexity", "-m", gemma_path, "-f", text_file, "-c", n_ctx, "--chunks", 1, "-t", 2,
                      "--batch-invariant", "on", check=True)
    ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", proc.stdout).group(1))
    tokens = tokenize(server, TEXT, True)
    assert len(tokens) >= 2 * n_ctx
    bos = tokenize(server, "", True)
    chunk = (bos or tokens[:1]) + tokens[1:n_ctx]
    r = client.completions.create(model="gemma-test", prompt=chunk, echo=True, logprobs=3, max_tokens=0)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == n_ctx and r.usage.prompt_tokens == n_ctx and r.usage.completion_tokens == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for value, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert value <= 0 and len(top) == 3 and max(top.values()) >= value - 1e-6
    scored = lp.token_logprobs[n_ctx // 2 + 1:]
    assert sum(scored) == pytest.approx(-len(scored) * math.log(ppl), rel=1e-4)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_echo_logprobs_then_the_completions_own(client):
    plain = client.completions.create(model="gemma-test", prompt="The sky is", max_tokens=4, logprobs=2)
    echoed = client.completions.create(model="gemma-test", prompt="The sky is", max_tokens=4, logprobs=2, echo=True)
    assert echoed.choices[0].text == "The sky is" + plain.choices[0].text
    n_prompt = echoed.usage.prompt_tokens
    e, p = echoed.choices[0].logprobs, plain.choices[0].logprobs
    assert len(e.tokens) == n_prompt + len(p.tokens) and e.tokens[n_prompt:] == p.tokens
    assert e.token_logprobs[n_prompt:] == pytest.approx(p.token_logprobs, abs=1e-4)
    assert e.token_logprobs[0] is None and all(v is not None for v in e.token_logprobs[1:])
    # Offsets into the returned text: the completion's start where the echoed prompt ends.
    assert e.text_offset[n_prompt] == len("The sky is")
    # A scored prompt is decoded afresh each time, its rows after the neighbours' in the batch: beside a
    # generating stream it gives the same bits (the server is batch-invariant by default).
    neighbour = client.completions.create(model="gemma-test", prompt="Once upon a time", max_tokens=40, stream=True)
    first = next(neighbour)  # the neighbour is generating from here on
    again = client.completions.create(model="gemma-test", prompt="The sky is", max_tokens=4, logprobs=2, echo=True)
    rest = list(neighbour)
    assert first.choices and len(rest) > 2
    assert again.choices[0].logprobs.token_logprobs == e.token_logprobs


def test_streamed_echo_equals_the_whole_reply(client):
    whole = client.completions.create(model="gemma-test", prompt="The sky is", max_tokens=4, logprobs=1, echo=True)
    chunks = [c for c in client.completions.create(model="gemma-test", prompt="The sky is", max_tokens=4, logprobs=1,
                                                   echo=True, stream=True) if c.choices]
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    streamed = [v for c in chunks if c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert streamed == whole.choices[0].logprobs.token_logprobs


def test_mixed_prompt_lists_as_llama_server_takes_them(server, client):
    """A list of a string and a token list is two prompts; a list holding token ids and strings is one
    prompt, its strings tokenized without BOS (llama-server's tokenize_input_prompts / tokenize_mixed)."""
    water = tokenize(server, "Water is", True)
    alone = [client.completions.create(model="gemma-test", prompt=p, max_tokens=6).choices[0].text
             for p in ("The sky is", "Water is")]
    both = client.completions.create(model="gemma-test", prompt=["The sky is", water], max_tokens=6, echo=True)
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == ["The sky is" + alone[0], "Water is" + alone[1]]
    mixed_ids = tokenize(server, "The sky", True) + tokenize(server, " is", False)
    by_ids = client.completions.create(model="gemma-test", prompt=mixed_ids, max_tokens=6)
    status, mixed = server.request("POST", "/v1/completions",
                                   {"prompt": tokenize(server, "The sky", True) + [" is"], "max_tokens": 6})
    assert status == 200, mixed
    assert len(mixed["choices"]) == 1 and mixed["choices"][0]["text"] == by_ids.choices[0].text
    assert mixed["usage"]["prompt_tokens"] == len(mixed_ids)
    status, body = server.request("POST", "/v1/completions", {"prompt": ["a", [1, [2]]]})
    assert status == 400 and "prompt" in body["error"]["message"]


def test_n_above_the_free_slots_waits_and_completes(client):
    r = client.completions.create(model="gemma-test", prompt="The sky is", max_tokens=5, n=4)
    assert [c.index for c in r.choices] == [0, 1, 2, 3] and len({c.text for c in r.choices}) == 1
    assert r.usage.completion_tokens > 0 and r.usage.completion_tokens % 4 == 0  # 4 equal greedy choices
    chat = client.chat.completions.create(model="gemma-test", messages=[{"role": "user", "content": "Say hi."}],
                                          max_tokens=5, n=4)
    assert len(chat.choices) == 4 and len({c.message.content for c in chat.choices}) == 1


def test_n_above_the_limits_is_a_clear_400(server):
    status, body = server.request("POST", "/v1/completions", {"prompt": "hi", "n": 17})
    assert status == 400 and "'n' is 17" in body["error"]["message"]
    # 3 prompts x 4 choices: 12 generations, more than the queue's 8 places.
    status, body = server.request("POST", "/v1/completions", {"prompt": ["a", "b", "c"], "n": 4, "max_tokens": 1})
    msg = body["error"]["message"]
    assert status == 400 and "12 generations" in msg and f"{MAX_QUEUE}" in msg and "--max-queue" in msg
    status, body = server.request("POST", "/v1/chat/completions",
                                  {"messages": [{"role": "user", "content": "hi"}], "n": 9, "max_tokens": 1})
    assert status == 400 and "9 generations" in body["error"]["message"]
    assert server.request("GET", "/health")[0] == 200


@pytest.mark.parametrize("method,want", [("POST", 411), ("PUT", 411), ("PATCH", 411), ("DELETE", 405)])
def test_a_request_without_a_body_length_is_answered_at_once(server, method, want):
    """No Content-Length and no chunked encoding: cpp-httplib would read a POST's, PUT's or PATCH's body
    until -to (600 s here); a DELETE it reads none of, and no route takes one."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    t0 = time.time()
    sock.sendall(f"{method} /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    elapsed = time.time() - t0
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {want}".encode()), data
    assert elapsed < 1.0, f"answered after {elapsed:.2f} s"
    assert json.loads(body)["error"]["code"] == want
    assert server.request("GET", "/health")[0] == 200


def test_a_chunked_post_is_read_as_before(server):
    """Transfer-Encoding: chunked announces the body's end: not refused with 411."""
    body = json.dumps({"prompt": "The sky is", "max_tokens": 2}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                 f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    assert json.loads(rest)["usage"]["completion_tokens"] == 2
