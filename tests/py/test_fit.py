"""--fit in run and bench: what the command line leaves open (-ngl, -c) is chosen so the model fits the
devices, with the margin left free; flags given are kept and checked; llama.cpp's spellings."""
import pytest

from conftest import run_tandem

PROMPT = ["-p", "The capital of Japan is", "-n", "8", "--temp", "0", "-t", "2", "--no-warmup"]


@pytest.fixture(autouse=True)
def no_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_PROBE_FILE", str(tmp_path / "none.json"))


def test_fit_offloads_what_fits_and_gives_the_cpus_text(gemma_path):
    cpu = run_tandem("run", "-m", gemma_path, *PROMPT, "-c", "256")
    assert cpu.returncode == 0, cpu.stderr
    # 300 MiB less an eighth: the output layer (the tied 170 MiB embeddings) and some of the others fit.
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, "-c", "256", "--sim-device", "300M", "--fit")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cpu.stdout
    fit = next(line for line in proc.stderr.splitlines() if line.startswith("fit:"))
    ngl = int(fit.split("-ngl ")[1].split()[0])
    assert 0 < ngl < 19, fit
    assert f"-ngl {ngl} of 19 layers" in proc.stderr and "SIM0" in proc.stderr


def test_fit_keeps_an_explicit_ngl_and_checks_it(gemma_path):
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, "--sim-device", "100M", "-ngl", "all", "-fit", "on")
    assert proc.returncode == 1 and "-ngl all (19 layers): SIM0 needs" in proc.stderr, proc.stderr
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, "-c", "256", "--sim-device", "300M", "-ngl", "3", "--fit")
    assert proc.returncode == 0, proc.stderr
    assert "fit:     -ngl 3 -c 256" in proc.stderr


def test_fit_target_is_the_margin_left_free(gemma_path):
    # A 1 GiB margin on a 1 GiB device leaves no room: nothing is offloaded, and the run still works.
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, "-c", "256", "--sim-device", "1G", "--fit", "-fitt", "1024")
    assert proc.returncode == 0, proc.stderr
    assert "fit:     -ngl 0 -c 256" in proc.stderr


def test_bench_fits_each_row(gemma_path):
    proc = run_tandem("bench", "-m", gemma_path, "-p", "8", "-n", "2", "-r", "1", "--fit", "--sim-device", "300M",
                      "-c", "256", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert '"backend": "CPU+SIM0"' in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--fit", "maybe"], "maybe"),
    (["-fitt", "lots"], "-fitt"),
    (["-fitc", "0"], "-fitc"),
])
def test_bad_fit_values(gemma_path, args, message):
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr


def test_serve_fits_too(gemma_path):
    from serve_util import Server
    server = Server(gemma_path, "--fit", "--sim-device", "300M", "-c", "512", "-np", "2", "--no-warmup")
    try:
        fit = next(line for line in server.log if line.startswith("fit:"))
        assert "-ngl " in fit and "-c 512" in fit, fit
        status, reply = server.request("POST", "/completion", {"prompt": "The capital of Japan is", "n_predict": 4,
                                                                "temperature": 0})
        assert status == 200 and reply["content"], reply
    finally:
        server.stop()
