#!/usr/bin/env python3
"""Load generator for bench/serve_speed.sh: measures one running server (tandem serve or llama-server) through
llama-server's native streaming POST /completion, which both answer the same way, and prints one JSON line.

Figures (issue 11 item 8): time to first token for a 32-token prompt (median of --reps, each prompt a
different 32-token window of one text so no prefix cache helps, cache_prompt off); single-stream decode
tokens/s (tokens after the first over the time after the first); aggregate tokens/s with 1, 4 and 8
concurrent streams (every token of every stream over the wall time from the first request to the last end);
95th-percentile inter-token latency at 4 streams. Every request runs to --n-predict tokens (ignore_eos), and
token counts come from the streamed `tokens` arrays, so a server that sends several tokens in one event
counts them all (the later ones with a gap of 0, as a client sees them). Only the standard library."""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time

TEXT = ("The river ran past the old mill where the children played every summer afternoon, and the miller, a "
        "patient man with flour in his beard, told them stories about the floods of years gone by, the winter the "
        "water froze so hard that carts crossed it, and the spring when the wheel broke and the whole village "
        "came to mend it. ") * 4


def post(port, path, body, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def tokenize(port, text):
    conn, r = post(port, "/tokenize", {"content": text, "add_special": True}, 60)
    ids = json.loads(r.read())["tokens"]
    conn.close()
    return [t if isinstance(t, int) else t["id"] for t in ids]


def stream(port, prompt, n_predict, timeout):
    """(t_sent, [arrival time of each token]) of one streamed generation."""
    body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "ignore_eos": True, "cache_prompt": False,
            "return_tokens": True, "temperature": 0}
    t0 = time.perf_counter()
    conn, r = post(port, "/completion", body, timeout)
    if r.status != 200:
        raise RuntimeError(f"/completion answered {r.status}: {r.read()[:300]!r}")
    arrivals = []
    while True:
        line = r.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        event = json.loads(line[6:])
        now = time.perf_counter()
        arrivals += [now] * len(event.get("tokens") or [])
        if event.get("stop"):
            break
    conn.close()
    return t0, arrivals


def prompt_of(ids, i):
    """A 32-token prompt: BOS, then 31 tokens of the text from offset 1 + 7 i (no two share more than BOS)."""
    start = 1 + 7 * i
    return [ids[0]] + ids[start:start + 31]


def concurrent(port, ids, n_streams, n_predict, timeout, first_prompt):
    results = [None] * n_streams

    def one(k):
        results[k] = stream(port, prompt_of(ids, first_prompt + k), n_predict, timeout)
    threads = [threading.Thread(target=one, args=(k,)) for k in range(n_streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if any(r is None for r in results):
        raise RuntimeError("a stream failed")
    n_tokens = sum(len(a) for _, a in results)
    gaps = [b - a for _, arr in results for a, b in zip(arr, arr[1:])]
    return n_tokens / wall, gaps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--reps", type=int, default=5, help="TTFT and single-stream repetitions (median)")
    ap.add_argument("--n-predict", type=int, default=128, help="tokens per stream")
    ap.add_argument("--streams", default="1,4,8", help="concurrency levels for the aggregate")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    ids = tokenize(a.port, TEXT)
    levels = [int(x) for x in a.streams.split(",")]
    if len(ids) < 1 + 7 * (a.reps + 2 * max(levels)) + 31:
        sys.exit("error: the text is too short for that many distinct prompts")
    stream(a.port, prompt_of(ids, 0), 4, a.timeout)  # warm-up: first-touch of weights and cells

    ttft, decode = [], []
    for i in range(a.reps):
        t0, arr = stream(a.port, prompt_of(ids, 1 + i), a.n_predict, a.timeout)
        if len(arr) != a.n_predict:
            sys.exit(f"error: {a.name}: {len(arr)} tokens streamed, {a.n_predict} asked")
        ttft.append(arr[0] - t0)
        decode.append((len(arr) - 1) / (arr[-1] - arr[0]))
    out = {"name": a.name, "ttft_ms": 1e3 * statistics.median(ttft), "decode_tps": statistics.median(decode),
           "n_predict": a.n_predict, "reps": a.reps}
    first = 1 + a.reps
    for n in levels:
        tps, gaps = concurrent(a.port, ids, n, a.n_predict, a.timeout, first)
        out[f"aggregate_tps_{n}"] = tps
        if n == 4:
            gaps.sort()
            out["itl_p95_ms_4"] = 1e3 * gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
