"""tandem plan: the placement and predicted decode speed before anything loads, on a real small model and
on a header-only description of DeepSeek-V3 671B at Q6_K (about 550 GB: the seed's -ngl 57 case on
24 GB of VRAM and 64 GB of RAM), written here with the gguf package: the planner needs the tensor table,
not the weights."""
import json
import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quant_shape_to_byte_shape

from conftest import run_tandem

# DeepSeek-V3's config.json: 61 layers (3 dense), 7168 wide, 128 heads, MLA ranks 1536 / 512, rope 64,
# 256 routed experts (8 used, 8 groups, 4 used), 1 shared, expert FFN 2048, dense FFN 18432.
V3 = dict(n_layer=61, e=7168, h=128, q_lora=1536, kv_lora=512, nope=128, rope=64, v=128, n_exp=256, used=8,
          ff_exp=2048, ff=18432, dense=3, vocab=129280)


def write_v3_description(path, big=Q.Q6_K):
    c = V3
    w = GGUFWriter(str(path), "deepseek2")
    a = "deepseek2."
    for key, val in [("context_length", 163840), ("embedding_length", c["e"]), ("block_count", c["n_layer"]),
                     ("feed_forward_length", c["ff"]), ("attention.head_count", c["h"]),
                     ("attention.head_count_kv", 1), ("attention.key_length", c["kv_lora"] + c["rope"]),
                     ("attention.value_length", c["kv_lora"]), ("attention.key_length_mla", c["nope"] + c["rope"]),
                     ("attention.value_length_mla", c["v"]), ("attention.q_lora_rank", c["q_lora"]),
                     ("attention.kv_lora_rank", c["kv_lora"]), ("rope.dimension_count", c["rope"]),
                     ("leading_dense_block_count", c["dense"]), ("expert_feed_forward_length", c["ff_exp"]),
                     ("expert_count", c["n_exp"]), ("expert_used_count", c["used"]), ("expert_shared_count", 1),
                     ("expert_gating_func", 2), ("expert_group_count", 8), ("expert_group_used_count", 4),
                     ("rope.scaling.original_context_length", 4096), ("vocab_size", c["vocab"])]:
        w.add_uint32(a + key, val)
    for key, val in [("rope.freq_base", 10000.0), ("attention.layer_norm_rms_epsilon", 1e-6),
                     ("expert_weights_scale", 2.5), ("rope.scaling.factor", 40.0),
                     ("rope.scaling.yarn_log_multiplier", 0.1)]:
        w.add_float32(a + key, val)
    w.add_bool(a + "expert_weights_norm", True)
    w.add_string(a + "rope.scaling.type", "yarn")

    def t(name, shape, qtype=big):  # shape outermost first, as Tandem prints it
        if qtype == Q.F32:
            w.add_tensor_info(name, tuple(shape), np.dtype(np.float32), 4 * int(np.prod(shape)), raw_dtype=qtype)
        else:  # the writer takes a quantized tensor's shape in bytes per row
            byte_shape = quant_shape_to_byte_shape(tuple(shape), qtype)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)

    e, h = c["e"], c["h"]
    t("token_embd.weight", (c["vocab"], e))
    for i in range(c["n_layer"]):
        b = f"blk.{i}."
        t(b + "attn_norm.weight", (e,), Q.F32)
        t(b + "attn_q_a.weight", (c["q_lora"], e))
        t(b + "attn_q_a_norm.weight", (c["q_lora"],), Q.F32)
        t(b + "attn_q_b.weight", (h * (c["nope"] + c["rope"]), c["q_lora"]))
        t(b + "attn_kv_a_mqa.weight", (c["kv_lora"] + c["rope"], e))
        t(b + "attn_kv_a_norm.weight", (c["kv_lora"],), Q.F32)
        t(b + "attn_k_b.weight", (h, c["kv_lora"], c["nope"]), Q.Q8_0)  # rows of 128: no k-quant fits
        t(b + "attn_v_b.weight", (h, c["v"], c["kv_lora"]))
        t(b + "attn_output.weight", (e, h * c["v"]))
        t(b + "ffn_norm.weight", (e,), Q.F32)
        if i < c["dense"]:
            t(b + "ffn_gate.weight", (c["ff"], e))
            t(b + "ffn_up.weight", (c["ff"], e))
            t(b + "ffn_down.weight", (e, c["ff"]))
            continue
        t(b + "ffn_gate_inp.weight", (c["n_exp"], e), Q.F32)
        t(b + "exp_probs_b.bias", (c["n_exp"],), Q.F32)
        for part, shape in [("gate", (c["n_exp"], c["ff_exp"], e)), ("up", (c["n_exp"], c["ff_exp"], e)),
                            ("down", (c["n_exp"], e, c["ff_exp"]))]:
            t(b + f"ffn_{part}_exps.weight", shape)
        t(b + "ffn_gate_shexp.weight", (c["ff_exp"], e))
        t(b + "ffn_up_shexp.weight", (c["ff_exp"], e))
        t(b + "ffn_down_shexp.weight", (e, c["ff_exp"]))
    t("output_norm.weight", (e,), Q.F32)
    t("output.weight", (c["vocab"], e))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


@pytest.fixture(scope="module", autouse=True)
def probe(tmp_path_factory, quick_probe):
    """The run's quick probe as `tandem probe --quick` alone writes it (no disk, no sim devices), in a file of
    the module's own (never the user's cache)."""
    path = tmp_path_factory.mktemp("probe") / "probe.json"
    j = dict(quick_probe[1], sims=[])
    j.pop("disk", None)
    path.write_text(json.dumps(j))
    old = os.environ.get("TANDEM_PROBE_FILE")
    os.environ["TANDEM_PROBE_FILE"] = str(path)
    yield j
    if old is None:
        del os.environ["TANDEM_PROBE_FILE"]
    else:
        os.environ["TANDEM_PROBE_FILE"] = old


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "DeepSeek-V3-Q6_K-header-only.gguf"
    write_v3_description(path)
    return path


def plan(*args):
    return run_tandem("plan", *args, "--ram-bw", "40")


def test_the_seeds_ngl_57_on_24g_vram_is_refused_with_what_fits(v3):
    proc = plan("-m", v3, "--vram", "24G", "--ram", "64G", "-ngl", "57", "-ctk", "q4_0", "-ctv", "q4_0")
    assert proc.returncode == 1
    assert "-ngl 57: CUDA0 needs" in proc.stderr and "but has 24.00 GiB" in proc.stderr, proc.stderr


def test_auto_fills_the_gpu_and_says_the_model_exceeds_the_ram(v3):
    proc = plan("-m", v3, "--vram", "24G", "--ram", "64G", "--json")
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    cpu, gpu = j["devices"]
    assert 500e9 < cpu["weight_bytes"] + gpu["weight_bytes"] < 600e9  # 671B at Q6_K
    assert gpu["weight_bytes"] + gpu["kv_bytes"] <= 24 * 2**30
    assert not j["fits_in_ram"] and j["n_gpu_layers"] >= 1
    text = plan("-m", v3, "--vram", "24G", "--ram", "64G").stdout
    assert "exceeds the RAM" in text and "llama-server -m MODEL -c 4096 -np 1 -ngl" in text


def test_the_seeds_case_gets_alternatives_with_numbers(v3):
    proc = plan("-m", v3, "--vram", "24G", "--ram", "64G", "-ctk", "q4_0", "-ctv", "q4_0", "--disk-bw", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    assert not j["fits_in_ram"]
    quants = {a["name"]: a for a in j["alternatives"] if a["kind"] == "quantization"}
    # Sizes from the tensor table re-typed as llama-quantize's mixes would: 671B parameters at Q2_K's
    # ~2.9 bits per weight (its attention and output keep more) is about 244 GB, at Q4_K_M about 405 GB.
    assert 225e9 < quants["Q2_K"]["bytes"] < 260e9 and 380e9 < quants["Q4_K_M"]["bytes"] < 430e9
    assert "Q6_K" not in quants  # not smaller than the model as it is
    assert not any(a["fits"] for a in quants.values())  # 64 + 24 GB hold none of them
    assert quants["Q2_K"]["tg_tokens_per_s"] > quants["Q4_K_M"]["tg_tokens_per_s"] > j["tg_tokens_per_s"]
    mmap = next(a for a in j["alternatives"] if a["kind"] == "mmap")
    # Most of the CPU's 500 GB stays on disk: a token's expert reads mostly come at 3 GB/s.
    assert 0 < mmap["tg_tokens_per_s"] < j["tg_tokens_per_s"] / 5
    assert "read from disk per token at 3.0 GB/s" in mmap["note"]
    text = plan("-m", v3, "--vram", "24G", "--ram", "64G", "-ctk", "q4_0", "-ctv", "q4_0").stdout
    assert "Alternatives:" in text and "Q2_K" in text and "mmap from disk" in text


def test_without_flags_the_fit_moves_experts_to_the_cpu_and_predicts_prefill(v3):
    proc = plan("-m", v3, "--vram", "24G", "--ram", "768G", "--json")
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    # Every layer offloaded, the experts of most layers kept in RAM: what llama.cpp users write by hand.
    assert j["n_gpu_layers"] == 62 and 50 <= j["n_cpu_moe"] < 61 and "--n-cpu-moe" in j["flags"]
    assert j["pp_tokens_per_s"] > 0 and j["pp_bottleneck"].startswith(("CPU's", "CUDA0's"))
    gpu = j["devices"][1]
    assert gpu["weight_bytes"] + gpu["kv_bytes"] <= 23 * 2**30  # 1 GiB left free, as llama.cpp's --fit
    # An explicit -ngl is kept as given.
    proc = plan("-m", v3, "--vram", "24G", "--ram", "768G", "-ngl", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_gpu_layers"] == 3 and json.loads(proc.stdout)["n_cpu_moe"] == 0


def test_experts_on_the_cpu_let_every_other_layer_onto_the_gpu(v3):
    proc = plan("-m", v3, "--vram", "24G", "--ram", "768G", "--cpu-moe", "--json")
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    assert j["n_gpu_layers"] == 62 and j["fits_in_ram"] and "--cpu-moe" in j["flags"]
    cpu = j["devices"][0]
    # Decode reads 8 of 256 routed experts per layer: about 37B active parameters, most of them on the CPU.
    assert 10e9 < cpu["read_bytes_per_token"] < 30e9
    assert j["bottleneck"] == "CPU's memory bandwidth"
    assert j["tg_tokens_per_s"] == pytest.approx(1 / (cpu["seconds_per_token"] + j["devices"][1]["seconds_per_token"]
                                                      + j["link_seconds_per_token"]))


def test_a_real_small_model_on_this_machine(gemma_path):
    proc = plan("-m", gemma_path)
    assert proc.returncode == 0, proc.stderr
    assert "decode:" in proc.stdout and "prefill:" in proc.stdout and "tokens/s predicted" in proc.stdout
    assert "speeds:    from tandem probe of" in proc.stdout
    slots = plan("-m", gemma_path, "-np", "4", "-c", "8192")
    assert "context:   8192 tokens (-np 4: 2048 per slot)" in slots.stdout, slots.stdout
    assert "-ngl 0" in proc.stdout  # no GPU given: nothing to offload


def test_the_printed_commands_carry_every_flag_the_plan_depends_on(gemma_path):
    proc = plan("-m", gemma_path, "-c", "8192", "-np", "4", "-ctk", "q8_0", "-ctv", "q8_0", "-ub", "256")
    assert proc.returncode == 0, proc.stderr
    want = "-c 8192 -np 4 -ctk q8_0 -ctv q8_0 -ub 256 -ngl 0"
    assert f"tandem serve -m MODEL {want}\n" in proc.stdout and f"llama-server -m MODEL {want}\n" in proc.stdout, proc.stdout
    j = json.loads(plan("-m", gemma_path, "-c", "8192", "-np", "4", "-ctk", "q8_0", "-ctv", "q8_0", "-ub", "256",
                        "--json").stdout)
    assert j["flags"] == want and j["llama_server_flags"] == want
    # A sim device is Tandem's: its line names it, llama-server's says there is no equivalent.
    proc = plan("-m", gemma_path, "--sim-device", "2G")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "tandem serve -m MODEL" in x)
    assert line.endswith(" --sim-device 2G") and "-c 4096 -np 1 -ngl " in line, line
    assert "llama-server: no equivalent" in proc.stdout and "llama-server -m" not in proc.stdout, proc.stdout
    j = json.loads(plan("-m", gemma_path, "--sim-device", "2G", "--json").stdout)
    assert j["flags"].endswith(" --sim-device 2G") and j["llama_server_flags"] is None


def test_a_context_not_given_is_lowered_to_fit_the_ram(gemma_path):
    # 18 KiB of KV cache per token: 4096 tokens (72 MiB) and a micro-batch's activations exceed 80 MiB,
    # 2048 tokens fit; down to -fitc only, and never when -c is given: then the plan does not fit.
    j = json.loads(plan("-m", gemma_path, "--ram", "80M", "-fitc", "1024", "--json").stdout)
    assert j["ctx"] == 2048 and "-c 2048" in j["flags"]
    for args in (["-fitc", "4096"], ["-c", "4096", "-fitc", "1024"]):
        j = json.loads(plan("-m", gemma_path, "--ram", "80M", *args, "--json").stdout)
        assert j["ctx"] == 4096 and not j["fits_in_ram"]


def test_the_context_shortens_to_keep_the_weights_in_ram_down_to_fit_ctx(gemma_path):
    # 235 MiB of weights, 33 MiB of buffers: 4096 tokens of KV cache (72 MiB) overflow 300 MiB, 1024 fit.
    j = json.loads(plan("-m", gemma_path, "--ram", "300M", "-fitc", "1024", "--json").stdout)
    assert j["ctx"] == 1024 and j["fits_in_ram"] and j["alternatives"] == [], j
    j = json.loads(plan("-m", gemma_path, "--ram", "300M", "-c", "4096", "-fitc", "1024", "--json").stdout)
    assert j["ctx"] == 4096 and not j["fits_in_ram"]  # a context given is kept


def test_a_model_that_does_not_fit_gets_the_numbers_and_alternatives_not_an_error(gemma_path):
    proc = plan("-m", gemma_path, "--ram", "100M")
    assert proc.returncode == 0 and "error" not in proc.stderr and "--fit" not in proc.stderr, proc.stderr
    assert ("does not fit: the CPU's share, 235.2 MiB of weights + 72.0 MiB of KV cache + 32.8 MiB of buffers = "
            "339.9 MiB, exceeds the RAM (100.0 MiB): its KV cache and buffers alone exceed it") in proc.stdout, proc.stdout
    assert "quantization: none fits; the smallest, Q2_K" in proc.stdout and "mmap from disk" in proc.stdout
    j = json.loads(plan("-m", gemma_path, "--ram", "100M", "--json").stdout)
    assert not j["fits_in_ram"] and j["ram_bytes"] == 100 << 20 and j["cpu_buffer_bytes"] > 0
    assert {a["kind"] for a in j["alternatives"]} == {"quantization", "mmap"}
    assert not any(a["fits"] for a in j["alternatives"])  # nor at Q2_K, nor streamed: the KV cache alone is over
    # The file is Q4_K_M with a tied output: llama-quantize gives token_embd the output's type (Q8_0 on its
    # 640-wide rows), so the Q4_K_M mix and the larger ones are no smaller than the file and are not offered.
    quants = {a["name"] for a in j["alternatives"] if a["kind"] == "quantization"}
    assert quants and not quants & {"Q6_K", "Q5_K_M", "Q4_K_M"}, quants


def test_every_alternative_carries_its_predicted_speeds(gemma_path):
    # 320 MiB: the weights fit, 8192 tokens of KV cache do not; a shorter context and fewer slots of
    # 2048 tokens do, each planned again with its speeds.
    j = json.loads(plan("-m", gemma_path, "--ram", "320M", "-c", "8192", "-np", "4", "--json").stdout)
    assert not j["fits_in_ram"]
    kinds = {a["kind"]: a for a in j["alternatives"]}
    assert {"quantization", "context", "slots", "mmap"} <= kinds.keys(), kinds
    for a in j["alternatives"]:
        assert a["pp_tokens_per_s"] > 0 and a["tg_tokens_per_s"] > 0, a
    n = int(kinds["context"]["name"].split()[1])
    assert 2048 < n < 4096 and kinds["context"]["fits"] and f"-c {n} -np 4 -ngl 0" in kinds["context"]["note"]
    assert kinds["slots"]["name"] == "-np 1" and kinds["slots"]["fits"] and "-c 2048 -np 1" in kinds["slots"]["note"]
    text = plan("-m", gemma_path, "--ram", "320M", "-c", "8192", "-np", "4").stdout
    rows = [x for x in text.splitlines() if x.startswith(("  quantization ", "  context ", "  slots ", "  mmap "))]
    assert len(rows) == len(j["alternatives"]) and all(" pp " in x and " tg " in x for x in rows), text


def test_plan_and_run_reserve_the_same_room_on_a_device(gemma_path):
    # Weights, KV cache, a micro-batch's activations and the logits rows on the output layer's device:
    # plan refuses -ngl all on a device too small with the same figure run does.
    args = ["-m", gemma_path, "--sim-device", "250M", "-ngl", "all", "-c", "256"]
    planned = plan(*args)
    ran = run_tandem("run", *args, "-p", "hi", "-n", "1", "--no-warmup")
    assert planned.returncode == ran.returncode == 1, planned.stderr + ran.stderr
    need = ran.stderr.split("SIM0 needs ")[1].split(" but")[0]
    assert "logits" not in need and f"SIM0 needs {need} but has 250.0 MiB" in planned.stderr, planned.stderr


def test_a_header_only_file_is_refused_by_run(v3):
    proc = run_tandem("run", "-m", v3, "-p", "hi", "-n", "1", "--no-warmup", "-c", "64")
    assert proc.returncode == 1
    assert "no tensor data after the tensor table" in proc.stderr and "header-only description" in proc.stderr, proc.stderr


def test_info_reads_a_header_only_file(v3):
    proc = run_tandem("info", "-m", v3, "--no-tensors")
    assert proc.returncode == 0, proc.stderr
    assert "hyperparameters (deepseek2)" in proc.stdout and "experts 256, used per token 8" in proc.stdout
    assert "header only: the tensor table without the tensors' data" in proc.stdout
    described = json.loads(run_tandem("info", "-m", v3, "--json", "--no-tensors").stdout)
    assert described["header_only"] is True


@pytest.mark.parametrize("args,message", [
    (["--vram", "lots"], "plan: --vram: 'lots' is not a size (examples: 4096, 512M, 1.5G"),
    (["--ram", "0"], "plan: --ram: '0': the RAM must be more than 0"),
    (["--ram", "x"], "plan: --ram: 'x' is not a size (examples: 4096, 512M, 1.5G"),
    (["--ram-bw", "-3"], "not a positive number"),
    (["--disk-bw", "fast"], "not a positive number"),
    (["--cpu-gflops", "0"], "not a positive number"),
    (["-fitt", "x"], "-fitt"),
    (["--gpus", "2"], "give their memory with --vram"),
    (["-ctk", "q9"], "-ctk q9"),
])
def test_bad_budgets_are_clear_errors(gemma_path, args, message):
    proc = plan("-m", gemma_path, *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("size", ["1e3G", "100000T", "0x10G", "-1G", "1.5", "inf", "1.G", "12Q"])
@pytest.mark.parametrize("command", [["plan", "-m", "m.gguf", "--ram"], ["plan", "-m", "m.gguf", "--vram"],
                                     ["run", "-m", "m.gguf", "--sim-device"], ["probe", "--sim-device"]])
def test_sizes_beyond_a_pib_or_not_plain_decimals_are_refused_alike_everywhere(command, size):
    proc = run_tandem(*command, size)
    want = f"error: {command[0]}: {command[-1]}: '{size}' is not a size (examples: 4096, 512M, 1.5G; units K, M, G, T; "
    assert proc.returncode == 1 and want in proc.stderr, proc.stderr


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model at all")
    proc = plan("-m", bad)
    assert proc.returncode == 1 and "not a GGUF file" in proc.stderr


def test_synth_describes_deepseek_at_any_mix_for_the_planner(tmp_path):
    out = tmp_path / "DeepSeek-V3-Q2_K.gguf"
    proc = run_tandem("synth", "--preset", "DeepSeek-V3", "--type", "Q2_K", "--header-only", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "header only" in proc.stdout and out.stat().st_size < 16 << 20  # the table, not 244 GB of weights
    j = json.loads(plan("-m", out, "--vram", "24G", "--ram", "256G", "--json").stdout)
    assert 235e9 < sum(d["weight_bytes"] for d in j["devices"]) < 250e9  # 671B at Q2_K's ~2.9 bits per weight
    assert j["fits_in_ram"] and j["n_gpu_layers"] == 62
    small = plan("-m", out, "--vram", "24G", "--ram", "64G").stdout
    assert "no mix Tandem writes is clearly smaller than this model (24" in small, small  # 24x GB
    run = run_tandem("run", "-m", out, "-p", "hi", "-n", "1", "--no-warmup", "-c", "64")
    assert run.returncode == 1 and ("truncated" in run.stderr or "header-only" in run.stderr)


def test_an_unknown_architecture(tmp_path):
    path = tmp_path / "foo.gguf"
    w = GGUFWriter(str(path), "foo-arch")
    w.add_uint32("foo-arch.block_count", 2)
    w.add_tensor_info("token_embd.weight", (8, 32), np.dtype(np.float32), 4 * 8 * 32, raw_dtype=Q.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    proc = plan("-m", path)
    assert proc.returncode == 1 and "foo-arch" in proc.stderr, proc.stderr
