"""The CUDA backend end to end: whole models (Gemma 3 270M, stories, tiny-deepseek-v3) with every layer
on the GPU, and with the experts on the CPU, against the CPU alone. Skips, saying why, where
`tandem --list-devices` shows no CUDA device. Tolerances: perplexity within 1% of the CPU's (a wrong
kernel moves it by far more); greedy text equal over 16 tokens (a near-tie could flip a token
legitimately: then compare the two runs' logits by hand)."""
import re

import pytest

from conftest import STORIES, run_tandem

PROMPT = ["-p", "The capital of Japan is", "-n", "16", "--temp", "0", "-t", "2", "-c", "256", "--no-warmup"]


@pytest.fixture(scope="module")
def cuda_device(tandem_bin):
    out = run_tandem("--list-devices", check=True).stdout
    m = re.search(r"^  (CUDA\d+): ", out, re.M)
    if not m:
        reason = re.search(r"^  CUDA: no device \((.*)\)$", out, re.M)
        pytest.skip(f"no CUDA device: {reason.group(1) if reason else out}")
    return m.group(1)


def test_list_devices_alone_shows_the_cpu_and_the_gpus_or_why_none(tandem_bin):
    """llama.cpp's `--list-devices` works without a command, in every build, GPU or not."""
    out = run_tandem("--list-devices", check=True).stdout
    assert re.search(r"^  CPU: ", out, re.M), out
    assert re.search(r"^  CUDA(: no device \(.+\)|\d+: .+ free\))$", out, re.M), out


def test_list_devices_names_the_gpu_with_its_memory(cuda_device):
    out = run_tandem("--list-devices", check=True).stdout
    assert re.search(rf"^  {cuda_device}: .+ \(sm_\d+, .+, .+ free\)$", out, re.M), out


@pytest.mark.parametrize("placement", [["-ngl", "all"], ["-ngl", "all", "-ot", "ffn=CPU"]])
def test_gemma_greedy_text_on_the_gpu_is_the_cpus(gemma_path, cuda_device, placement):
    cpu = run_tandem("run", "-m", gemma_path, *PROMPT, check=True)
    gpu = run_tandem("run", "-m", gemma_path, *PROMPT, *placement, check=True)
    assert cuda_device in gpu.stderr  # the placement summary names the device
    assert gpu.stdout == cpu.stdout


@pytest.mark.parametrize("model", ["gemma", "stories"])
def test_perplexity_on_the_gpu_is_within_one_percent_of_the_cpus(gemma_path, cuda_device, tmp_path, model):
    path = gemma_path if model == "gemma" else STORIES
    if not path.exists():
        pytest.skip(f"{path} is missing")
    text = tmp_path / "text.txt"
    text.write_text("Once upon a time there was a little girl who lived in a village near the forest. " * 40)
    args = ["perplexity", "-m", path, "-f", text, "-c", "128", "-b", "128", "-t", "2"]

    def ppl(proc):
        m = re.search(r"PPL = ([0-9.]+)", proc.stdout + proc.stderr)
        assert m, proc.stderr[-2000:]
        return float(m.group(1))

    cpu = ppl(run_tandem(*args, check=True))
    gpu = ppl(run_tandem(*args, "-ngl", "all", check=True))
    assert abs(gpu - cpu) / cpu < 0.01, (cpu, gpu)


@pytest.fixture(scope="module")
def tiny_deepseek(tmp_path_factory):
    """tiny-deepseek-v3 (synth, Q8_0, 3 layers: a dense one, 2 MoE with a shared expert): absorbed MLA over
    the latent cache (mla_attention.cu) and the routed experts (grouped GEMM in prefill)."""
    path = tmp_path_factory.mktemp("cuda-deepseek") / "tiny-v3.gguf"
    run_tandem("synth", "--preset", "tiny-deepseek-v3", "--layers", "3", "--type", "Q8_0", "-t", "2", "-o", path,
               check=True)
    return path


@pytest.mark.parametrize("placement", [["-ngl", "all"], ["-ngl", "all", "-ot", "exps=CPU"]])
def test_tiny_deepseek_on_the_gpu_gives_the_cpus_text_and_perplexity(tiny_deepseek, cuda_device, tmp_path, placement):
    cpu = run_tandem("run", "-m", tiny_deepseek, *PROMPT, check=True)
    gpu = run_tandem("run", "-m", tiny_deepseek, *PROMPT, *placement, check=True)
    assert cuda_device in gpu.stderr
    assert gpu.stdout == cpu.stdout
    # 128-token batches: the MLA kernel with every chunk in one block, the experts' grouped GEMM.
    text = tmp_path / "text.txt"
    text.write_text("Once upon a time there was a little girl who lived in a village near the forest. " * 40)
    args = ["perplexity", "-m", tiny_deepseek, "-f", text, "-c", "128", "-b", "128", "-t", "2"]

    def ppl(proc):
        m = re.search(r"PPL = ([0-9.]+)", proc.stdout + proc.stderr)
        assert m, proc.stderr[-2000:]
        return float(m.group(1))

    cpu_ppl = ppl(run_tandem(*args, check=True))
    gpu_ppl = ppl(run_tandem(*args, *placement, check=True))
    assert abs(gpu_ppl - cpu_ppl) / cpu_ppl < 0.01, (cpu_ppl, gpu_ppl)
