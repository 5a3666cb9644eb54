"""The CPU's routed experts overlap the offload device's shared expert (issues 13 and 17). With the routed
experts in RAM (-ot exps=CPU) and the rest offloaded, a MoE layer queues its shared expert on the device,
computes the routed experts on the CPU without waiting for it and fetches the device's result after. Shown
on the sim device, whose queue runs on its own thread, in the --trace timeline: the routed-expert ops start
while the device's queue still holds the shared expert (a forward pass that waited for it first would
start them after it ended). Whether the device thread then really computes at the same time is up to the
OS: on the 2-core, heavily shared build machine it mostly did not get a core until the CPU's work was
done, so that is not asserted. The greedy text equals the CPU-only run's (the logits are bit-identical:
tests/model/placement_test.cpp). Model: tiny-deepseek-v3 synth (3 layers: 2 MoE with a shared expert)."""
import json

import pytest

from conftest import run_tandem

PROMPT = "The quick brown fox jumps over the lazy dog. " * 24  # one ubatch of ~240 tokens


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("moe-overlap") / "tiny-v3.gguf"
    run_tandem("synth", "--preset", "tiny-deepseek-v3", "--layers", "3", "--type", "Q8_0", "-t", "2", "-o", path,
               check=True)
    return path


def run_text(model, *flags):
    proc = run_tandem("run", "-m", model, "-p", PROMPT, "-n", "4", "--temp", "0", "-t", "2", "--no-warmup", *flags)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_routed_experts_run_while_the_device_runs_the_shared_expert(model, tmp_path, tandem_bin):
    trace = tmp_path / "trace.json"
    text = run_text(model, "--sim-device", "1G", "-ngl", "all", "-ot", "exps=CPU", "--trace", trace)
    assert text == run_text(model)

    events = json.loads(trace.read_text())
    lanes = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    ops = sorted((e for e in events if e["ph"] == "X"), key=lambda e: e["ts"])
    cpu = [e for e in ops if lanes[e["tid"]] == "cpu"]
    device = [e for e in ops if lanes[e["tid"]] == "SIM0"]
    routed = [e for e in cpu if e["name"] == "matmul_id_swiglu"]
    assert len(routed) == 2 * 4, [e["name"] for e in cpu]  # 2 MoE layers x (the prompt + 3 decode steps)

    def end(e):
        return e["ts"] + e["dur"]

    def started_before_the_shared_expert_ended(r):
        # The shared expert of r's layer on SIM0: gate and up matmuls, swiglu, down matmul; the last swiglu
        # to start before the CPU adds the fetched result to the routed experts' sum.
        add = next(e for e in cpu if e["name"] == "add" and e["ts"] > r["ts"])
        k = max(j for j, e in enumerate(device) if e["name"] == "swiglu" and e["ts"] < add["ts"])
        assert [device[k - 2]["name"], device[k + 1]["name"]] == ["matmul", "matmul"], device[k - 2:k + 2]
        return r["ts"] < end(device[k + 1])

    waited = [i for i, r in enumerate(routed) if not started_before_the_shared_expert_ended(r)]
    # One may miss where the host thread lost its core between queueing the shared expert and starting
    # the routed experts, long enough for the device to finish (a loaded machine); waiting misses all.
    assert len(waited) <= 1, f"routed-expert ops {waited} of {len(routed)} started after the shared expert ended"
