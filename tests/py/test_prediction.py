"""tandem plan's predicted prefill and decode speed against tandem bench on this CPU, with a wide bound:
the suite runs on shared, noisy machines (the issue's 15% is checked by hand on a quiet one and recorded
in BENCHMARKS.md; bench/plan_check.sh prints the table). The probe is the quick one tandem plan makes of
the model's weight types when no probe is cached, as on a fresh machine."""
import json
import os

import pytest

from conftest import run_tandem

# Predicted over measured may be off by this factor either way before the test fails: wide enough for a
# loaded machine (at load 12 on this 2-core Zen 4 the ratios ran 0.99-1.45), narrow enough that a model
# missing a term (compute, the per-call costs, a tenth of Gemma 3 270M's decode, or a pass over the
# weights per micro-batch) or a unit slip (bits for bytes, GiB for GB twice) fails it.
BOUND = 2.0


@pytest.mark.parametrize("devices", [[], ["--sim-device", "1G", "-ngl", "all"]], ids=["cpu", "cpu+sim"])
def test_plan_predicts_bench_on_this_cpu(gemma_path, tmp_path, monkeypatch, devices):
    # The probe keeps its best figures, so the bench's best repetition is set against them, not the mean (a
    # slow stretch of the VM during the bench put its mean at half the prediction once: tg32 107 against 223).
    # With more runnable threads than CPUs the two catch different moments of other processes' load (seen
    # here: a factor 3.5 at load 12 on 2 CPUs).
    load, n_cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > n_cpus:
        pytest.skip(f"load average {load:.1f} on {n_cpus} CPUs: speeds measured now say nothing about the model")
    monkeypatch.setenv("TANDEM_PROBE_FILE", str(tmp_path / "none.json"))  # no cache: plan measures now
    plan = run_tandem("plan", "-m", gemma_path, "-p", "128", "-ub", "128", *devices, "--json")
    assert plan.returncode == 0, plan.stderr
    predicted = json.loads(plan.stdout)
    bench = run_tandem("bench", "-m", gemma_path, "-p", "128", "-n", "32", "-ub", "128", "-r", "3", *devices,
                       "-o", "json")
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(bench.stdout)
    pp = next(max(r["samples_ts"]) for r in rows if r["n_prompt"] == 128)
    tg = next(max(r["samples_ts"]) for r in rows if r["n_gen"] == 32)
    for name, want, got in [("pp128", predicted["pp_tokens_per_s"], pp), ("tg32", predicted["tg_tokens_per_s"], tg)]:
        assert 1 / BOUND < want / got < BOUND, f"{name}: predicted {want:.1f} tokens/s, bench measured {got:.1f}"
