"""The values llama.cpp's tools accept for the flags Tandem shares with them (common/arg.cpp for
llama-cli/llama-completion/llama-perplexity, tools/llama-bench/llama-bench.cpp, tools/quantize): every
spelling means what it means there, in both "--flag value" and "--flag=value" forms, and a value Tandem
does not understand is an error naming the flag and the value, never a silent default."""
import json
import os

import pytest

from conftest import STORIES, run_tandem


ON = ["on", "enabled", "true", "1", "yes"]     # llama.cpp's is_truthy, and yes
OFF = ["off", "disabled", "false", "0", "no"]  # is_falsey, and no


def summary(*flags, cmd="run"):
    proc = run_tandem(cmd, "-m", STORIES, "-p", "Once", "-n", "1", "--temp", "0", *flags)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def flash_attention(stderr):
    line = next(l for l in stderr.splitlines() if l.startswith("kv:"))
    return line.rsplit("flash attention ", 1)[1]


def expect_error(proc, *needles):
    """needles: strings the error line must hold; a tuple is alternatives (a flag's other name)."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error:"), proc.stderr
    for n in needles:
        assert any(a in err for a in (n if isinstance(n, tuple) else (n,))), err


@pytest.mark.parametrize("value,expected", [(v, "on") for v in ON] + [(v, "off") for v in OFF])
@pytest.mark.parametrize("form", ["-fa {}", "--flash-attn {}", "--flash-attn={}"])
def test_flash_attn_spellings(tandem_bin, value, expected, form):
    flags = form.format(value).split(" ")
    assert flash_attention(summary(*flags)) == expected


@pytest.mark.parametrize("flags", [["-fa", "auto"], ["-fa", "-1"], ["--flash-attn=auto"], ["--flash-attn=-1"]])
def test_flash_attn_auto_is_the_default(tandem_bin, flags):
    assert flash_attention(summary(*flags)) == flash_attention(summary())


def test_flash_attn_alone_means_on(tandem_bin):
    assert flash_attention(summary("-fa", "-t", "1")) == "on"


@pytest.mark.parametrize("cmd", ["run", "bench", "perplexity"])
@pytest.mark.parametrize("flags,needles", [
    (["-fa", "maybe"], ["-fa", "'maybe'"]),
    # bench names a listed flag by its short name
    (["--flash-attn=2"], [("--flash-attn", "-fa"), "'2'"]),
    (["--flash-attn="], [("--flash-attn", "-fa"), "''"]),
    (["-ngl", "some"], ["-ngl", "'some'"]),
    (["--n-gpu-layers=1.5"], [("--n-gpu-layers", "-ngl"), "'1.5'"]),
    (["--cpu-strict", "maybe"], ["--cpu-strict", "'maybe'"]),
    (["-lm", "dio"], ["-lm", "dio"]),
    (["--load-mode=swap"], [("--load-mode", "-lm"), "'swap'"]),
    (["-ctk", "q4_k"], ["-ctk", "'q4_k'"]),
    (["--numa", "everywhere"], ["--numa", "'everywhere'"]),
    (["-t", "many"], ["-t", "'many'"]),
])
def test_refusals_name_flag_and_value(tandem_bin, cmd, flags, needles):
    expect_error(run_tandem(cmd, "-m", STORIES, *flags), *needles)


@pytest.mark.parametrize("value,label", [("all", "all"), ("auto", "auto"), ("99", "99"), ("-1", "auto"),
                                         ("-2", "all")])
@pytest.mark.parametrize("form", ["-ngl {}", "--gpu-layers={}", "--n-gpu-layers {}"])
def test_gpu_layers_values_parse_and_warn(tandem_bin, value, label, form):
    err = summary(*form.format(value).split(" "))
    assert f"warning: -ngl {label}: no offload device (CUDA: " in err


@pytest.mark.parametrize("value", ["0", "-1", "--threads=0"])
def test_threads_zero_or_less_means_every_allowed_cpu(tandem_bin, value):
    flags = [value] if value.startswith("--") else ["-t", value]
    line = next(l for l in summary(*flags).splitlines() if l.startswith("threads:"))
    assert line.startswith(f"threads: {len(os.sched_getaffinity(0))},"), line


@pytest.mark.parametrize("flags,needle", [
    (["--no-mmap"], "read into RAM"), (["--mmap"], "memory-mapped"), (["--no-mmap", "--mmap"], "memory-mapped"),
    (["-lm", "none"], "read into RAM"), (["--load-mode=mmap"], "memory-mapped"), (["-lm", "auto"], "memory-mapped"),
    (["--no-warmup"], "(no warm-up)"), (["--no-warmup", "--warmup"], "(warm-up decode"),
])
def test_paired_and_newer_spellings(tandem_bin, flags, needle):
    assert needle in summary(*flags)


@pytest.mark.parametrize("flags", [
    ["--temperature", "0"], ["--typical-p", "0.9"], ["--predict", "1"], ["--n-predict=1"], ["-n", "-2"],
    ["--cpu-strict", "true"], ["--cpu-strict=0"], ["--numa="], ["--display-prompt"], ["--chunks", "-2"],
])
def test_accepted_spellings(tandem_bin, flags):
    if flags[0] == "--chunks":  # a perplexity flag: refused by run, taken by perplexity
        expect_error(run_tandem("perplexity", "-m", STORIES, *flags), "no text given")
        return
    summary(*flags)


def test_display_prompt_pair(tandem_bin):
    shown = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "1", "--temp", "0", "--no-display-prompt",
                       "--display-prompt", check=True)
    hidden = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "1", "--temp", "0", "--no-display-prompt",
                        check=True)
    assert shown.stdout.startswith("Once") and not hidden.stdout.startswith("Once")


@pytest.mark.parametrize("flags,needles", [
    (["-n", "-3"], ["-n", "out of range"]),
    (["--repeat-penalty", "0"], ["--repeat-penalty", "greater than 0"]),
    (["--presence-penalty", "inf"], ["--presence-penalty", "finite"]),
    (["--frequency-penalty=-inf"], ["--frequency-penalty", "finite"]),
])
def test_run_refusals(tandem_bin, flags, needles):
    expect_error(run_tandem("run", "-m", STORIES, "-p", "Once", *flags), *needles)


def bench_rows(*flags):
    proc = run_tandem("bench", "-m", STORIES, "-r", "1", "-o", "jsonl", *flags)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(l) for l in proc.stdout.splitlines()]


def test_bench_runs_the_cross_product_of_lists_in_llama_bench_order(tandem_bin):
    rows = bench_rows("-p", "16,32", "-n", "4", "-fa", "0,1", "-t", "1,2")
    # llama-bench: flash_attn outside threads; per point every -p, then every -n.
    got = [(r["fa"], r["threads"], r["test"]) for r in rows]
    want = [(fa, t, test) for fa in ["0", "1"] for t in [1, 2] for test in ["pp16", "pp32", "tg4"]]
    assert got == want
    assert [r["flash_attn"] for r in rows] == ["off"] * 6 + ["on"] * 6


def test_bench_ranges_batch_and_cache_lists(tandem_bin):
    rows = bench_rows("-p", "8", "-n", "0", "-t", "1-4*2", "-ub", "4,8", "-ctk", "f16,f32", "-d", "0,4")
    assert len(rows) == 2 * 2 * 3 * 2
    assert {r["threads"] for r in rows} == {1, 2, 4}
    assert {r["n_ubatch"] for r in rows} == {4, 8} and {r["type_k"] for r in rows} == {"f16", "f32"}
    assert {r["n_depth"] for r in rows} == {0, 4}


def test_bench_pg_and_markdown_columns(tandem_bin):
    rows = bench_rows("-p", "0", "-n", "0", "-pg", "8,4")
    assert [(r["test"], r["n_prompt"], r["n_gen"]) for r in rows] == [("pp8+tg4", 8, 4)]
    md = run_tandem("bench", "-m", STORIES, "-r", "1", "-p", "8", "-n", "0", "-fa", "on,off", check=True).stdout
    lines = md.splitlines()
    assert lines[0] == "| model | size | params | backend | threads | fa | test | t/s |"
    assert [l.split("|")[6].strip() for l in lines[2:]] == ["on", "off"]


@pytest.mark.parametrize("flags,needles", [
    (["-fa", "0,maybe"], ["-fa", "'maybe'"]),
    (["-t", "4-1"], ["-t", "'4-1'", "empty range"]),
    (["-p", "16,,32"], ["-p", "empty item"]),
    (["-ctk", "f16,q9"], ["-ctk", "'q9'"]),
    (["-o", "csv"], ["-o", "'csv'"]),
    (["-pg", "8"], ["-pg", "PP,TG"]),
])
def test_bench_list_refusals(tandem_bin, flags, needles):
    expect_error(run_tandem("bench", "-m", STORIES, *flags), *needles)


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory, tandem_bin):
    path = tmp_path_factory.mktemp("fv") / "tiny-f16.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "F16", "-o", path, check=True)
    return path


@pytest.mark.parametrize("type_arg", ["15", "q4_k_m", "Q4_K_M"])
def test_quantize_type_spellings(tmp_path, f16_model, type_arg):
    out = tmp_path / "out.gguf"
    proc = run_tandem("quantize", f16_model, out, type_arg, "0", check=True)
    assert "(Q4_K_M)" in proc.stdout


def test_quantize_short_form_writes_beside_the_input(tmp_path, f16_model):
    src = tmp_path / "m.gguf"
    src.write_bytes(f16_model.read_bytes())
    proc = run_tandem("quantize", src, "q8_0", check=True)
    assert (tmp_path / "ggml-model-Q8_0.gguf").exists(), proc.stdout


def batch_invariant(stderr):
    line = next(l for l in stderr.splitlines() if l.startswith("threads:"))
    return "batch-invariant" in line


@pytest.mark.parametrize("value,expected", [("on", True), ("yes", True), ("off", False), ("0", False)])
def test_batch_invariant_values(tandem_bin, value, expected):
    assert batch_invariant(summary("--batch-invariant", value)) == expected
    assert not batch_invariant(summary())  # off unless asked for


@pytest.mark.parametrize("value", ["auto", "maybe", ""])
def test_batch_invariant_rejects_other_values(tandem_bin, value):
    proc = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "1", "--batch-invariant", value)
    expect_error(proc, "--batch-invariant", f"'{value}'" if value != "auto" else "on or off")
