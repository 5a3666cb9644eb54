"""tandem bench --expert-stats FILE (issue 10, item 3): per-layer expert hit counts of the timed runs, as the
JSON of docs/expert-stats.md, on a tiny deepseek2 synth (layer 0 dense, layers 1-2 MoE: 16 experts, top-4)."""
import json

import pytest

from conftest import run_tandem


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("expert-stats")
    out = {}
    for form, extra in (("split", []), ("fused", ["--fuse-gate-up-exps"])):
        out[form] = d / f"tiny-v3-{form}.gguf"
        run_tandem("synth", "--preset", "tiny-deepseek-v3", "--layers", "3", "--type", "Q8_0", "-t", "2", *extra,
                   "-o", out[form], check=True)
    return out


def bench_stats(model, path, *args):
    run_tandem("bench", "-m", model, "-r", "2", "--expert-stats", path, *args, check=True)
    return json.loads(path.read_text())


def test_counts_every_timed_token_once_per_chosen_expert(models, tmp_path, tandem_bin):
    s = bench_stats(models["split"], tmp_path / "s.json", "-p", "16", "-n", "4", "-t", "2")
    assert (s["arch"], s["n_layer"], s["n_expert"], s["n_expert_used"]) == ("deepseek2", 3, 16, 4)
    assert [l["layer"] for l in s["layers"]] == [1, 2]  # the dense layer 0 has no router
    for layer in s["layers"]:
        assert layer["tokens"] == 2 * (16 + 4)  # -r 2 of pp16 and tg4; the warm-up runs are not counted
        assert len(layer["hits"]) == 16 and sum(layer["hits"]) == layer["tokens"] * 4
        assert max(layer["hits"]) < layer["tokens"]  # no expert twice for one token


def test_a_sweep_adds_up_and_the_fused_file_routes_alike(models, tmp_path, tandem_bin):
    split = bench_stats(models["split"], tmp_path / "s.json", "-p", "8", "-n", "0", "-t", "1,2")
    assert all(l["tokens"] == 2 * 2 * 8 for l in split["layers"])  # two thread counts, -r 2, pp8
    fused = bench_stats(models["fused"], tmp_path / "f.json", "-p", "8", "-n", "0", "-t", "1,2")
    assert [l["hits"] for l in fused["layers"]] == [l["hits"] for l in split["layers"]]  # the same weights


def test_a_model_without_experts_is_refused(tmp_path, tandem_bin):
    model = tmp_path / "tiny-llama.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--layers", "1", "--type", "Q8_0", "-o", model, check=True)
    proc = run_tandem("bench", "-m", model, "-p", "8", "-n", "0", "-r", "1", "--expert-stats", tmp_path / "x.json")
    assert proc.returncode == 1 and "error: bench: --expert-stats:" in proc.stderr and "no experts" in proc.stderr
