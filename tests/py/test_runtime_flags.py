"""llama.cpp's runtime flags on run and bench: --prio, --poll, -C/--cpu-mask, -Cr/--cpu-range, --cpu-strict,
--numa, --no-warmup, and -b/-ub. Bad values end in one 'error:' line and exit 1; good ones show in the
start-up summary and in what the OS reports for the running threads (/proc)."""
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import STORIES, TANDEM, run_tandem

FLAGS = ["--prio", "--poll", "-C, --cpu-mask", "-Cr, --cpu-range", "--cpu-strict", "--numa", "--no-warmup"]


def expect_error(proc, needle):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "error:" in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr


def allowed_cpus():
    return sorted(os.sched_getaffinity(0))


def generate(*flags, prefix=(), n=8, binary=TANDEM, model=STORIES):
    cmd = [*prefix, str(binary), "run", "-m", str(model), "-p", "Once upon a time", "-n", str(n), "--temp", "0",
           *map(str, flags)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode >= 0, proc.stderr
    return proc


def summary(proc):
    lines = [l for l in proc.stderr.splitlines() if l.startswith("cpu:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("cmd", ["run", "bench"])
def test_help_explains_every_flag(tandem_bin, cmd):
    out = run_tandem(cmd, "--help", check=True).stdout
    for flag in FLAGS:
        line = next((l for l in out.splitlines() if l.strip().startswith(flag)), None)
        assert line is not None, f"{flag} missing from {cmd} --help"
        assert len(line.split(None, 3)) >= 3, f"{flag} has no explanation: {line!r}"


@pytest.mark.parametrize("cmd", ["run", "bench"])
@pytest.mark.parametrize("flag,value,needle", [
    ("--prio", "4", "out of range [-1, 3]"),
    ("--prio", "-2", "out of range [-1, 3]"),
    ("--prio", "high", "not an integer"),
    ("--poll", "101", "out of range [0, 100]"),
    ("--poll", "-1", "out of range [0, 100]"),
    ("--cpu-mask", "0xZZ", "'Z' is not a hex digit"),
    ("-C", "0", "selects no CPU"),
    ("--cpu-mask", "0x", "not a hex CPU mask"),
    ("--cpu-range", "3-1", "ends before it starts"),
    ("-Cr", "a-b", "not a CPU range"),
    ("--cpu-range", "0-99999", "CPU 99999 does not exist"),
    ("--cpu-strict", "2", "not a yes/no value"),
    ("--numa", "mirror", "unknown mode 'mirror'"),
    ("-b", "0", "out of range"),
    ("-ub", "0", "out of range"),
])
def test_bad_values_are_errors(tandem_bin, cmd, flag, value, needle):
    expect_error(run_tandem(cmd, "-m", STORIES, flag, value), needle)


def test_mask_naming_a_cpu_that_does_not_exist(tandem_bin):
    proc = run_tandem("run", "-m", STORIES, "-p", "x", "-n", "1", "--cpu-mask", "8" + "0" * 255)  # CPU 1023
    expect_error(proc, "CPU 1023 does not exist")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"), reason="needs taskset, 2 CPUs")
def test_taskset_binding_is_reported_and_never_widened(tandem_bin):
    first, last = allowed_cpus()[0], allowed_cpus()[-1]
    proc = generate(prefix=["taskset", "-c", str(first)])
    assert proc.returncode == 0, proc.stderr
    assert f"process bound to CPU {first} (taskset" in summary(proc)
    assert "threads: 1," in proc.stderr  # the default counts only the allowed CPUs' cores
    # A mask outside what taskset allows is refused, naming the CPU.
    proc = generate("--cpu-mask", format(1 << last, "x"), prefix=["taskset", "-c", str(first)])
    expect_error(proc, f"CPU {last} is outside the CPUs this process may use")


@pytest.mark.skipif(not shutil.which("numactl"), reason="numactl is not installed (scripts/setup.sh installs it)")
def test_numactl_memory_binding_is_reported(tandem_bin):
    proc = generate("--numa", "numactl", prefix=["numactl", "--membind=0", "--cpunodebind=0"])
    assert proc.returncode == 0, proc.stderr
    line = summary(proc)
    assert "memory policy bind node 0" in line, line
    assert "numa: " in line


def test_numa_on_this_machine(tandem_bin):
    nodes = [d for d in os.listdir("/sys/devices/system/node") if d.startswith("node")] or ["node0"]
    for mode in ("distribute", "isolate", "numactl"):
        proc = generate("--numa", mode)
        assert proc.returncode == 0, proc.stderr
        if len(nodes) == 1:
            assert f"numa: 1 node, so --numa {mode} changes nothing" in summary(proc)
        else:
            assert f"numa: {len(nodes)} nodes" in summary(proc)


def test_default_summary_and_warmup(tandem_bin):
    proc = generate()
    assert proc.returncode == 0, proc.stderr
    line = summary(proc)
    assert "priority normal, poll 50; threads not pinned" in line and "memory policy default" in line, line
    assert "(warm-up decode" in proc.stderr
    cold = generate("--no-warmup")
    assert "(no warm-up)" in cold.stderr and "warm-up decode" not in cold.stderr
    assert cold.stdout == proc.stdout  # the warm-up leaves nothing in the cache


def test_prompt_longer_than_the_batch_is_fed_in_chunks(tandem_bin):
    ref = generate(n=16)
    assert ref.returncode == 0, ref.stderr
    for flags in (["-b", "2"], ["-b", "3", "-ub", "2"], ["-b", "5", "-ub", "64"]):
        proc = generate(*flags, n=16)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ref.stdout, flags
    proc = generate("-b", "4", "-ub", "64")
    assert "batch 4, micro-batch 4" in proc.stderr  # -ub is capped by -b, as in llama.cpp


def test_bench_feeds_a_long_prompt_in_batch_chunks(tandem_bin):
    proc = run_tandem("bench", "-m", STORIES, "-p", "64", "-n", "0", "-r", "1", "-b", "16", "-ub", "8",
                      "-o", "json", "--no-warmup", check=True)
    assert '"test": "pp64"' in proc.stdout


def thread_facts(*flags):
    """(CPUs allowed, scheduling policy) of every thread of a running generation, from /proc."""
    cmd = [str(TANDEM), "run", "-m", str(STORIES), "-p", "Once", "-n", "1000000", "-c", "1000000", "--ignore-eos",
           *map(str, flags)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        facts = {}
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            tids = os.listdir(f"/proc/{proc.pid}/task")
            if len(tids) >= 2:
                time.sleep(0.3)  # past the pool's construction
                for tid in os.listdir(f"/proc/{proc.pid}/task"):
                    with open(f"/proc/{proc.pid}/task/{tid}/status") as f:
                        cpus = next(l.split()[1] for l in f if l.startswith("Cpus_allowed_list"))
                    facts[tid] = (cpus, os.sched_getscheduler(int(tid)))
                break
            time.sleep(0.05)
        assert facts, f"no worker threads appeared: {proc.stderr.read() if proc.poll() is not None else ''}"
        return facts
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_threads_are_pinned_where_asked(tandem_bin):
    first, last = allowed_cpus()[0], allowed_cpus()[-1]
    facts = thread_facts("-t", "2", "-Cr", f"{last}-{last}")
    assert {cpus for cpus, _ in facts.values()} == {str(last)}, facts
    facts = thread_facts("-t", "2", "--cpu-strict", "1", "-C", format((1 << first) | (1 << last), "x"))
    assert sorted(cpus for cpus, _ in facts.values()) == sorted([str(first), str(last)]), facts


def test_low_priority_reaches_every_thread(tandem_bin):
    facts = thread_facts("-t", "2", "--prio", "-1")
    assert {policy for _, policy in facts.values()} == {os.SCHED_BATCH}, facts


@pytest.fixture
def readable_copies():
    """The binary and the model copied to a folder `nobody` can reach: the checkout's own parents may not
    be world-readable (a mktemp -d clone, pytest's 0700 temp root)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="tandem-nobody-", dir="/tmp"))
    folder.chmod(0o755)
    binary, model = folder / "tandem", folder / "model.gguf"
    shutil.copy2(TANDEM, binary)
    shutil.copy2(STORIES, model)
    binary.chmod(0o755)
    model.chmod(0o644)
    yield binary, model
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop to nobody")
def test_refused_priority_warns_and_runs(tandem_bin, readable_copies):
    binary, model = readable_copies
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if subprocess.run([*as_nobody, "test", "-x", str(binary), "-a", "-r", str(model)]).returncode != 0:
        pytest.skip(f"nobody cannot read {binary.parent} (/tmp is not world-accessible here)")
    proc = generate("--prio", "3", prefix=as_nobody, binary=binary, model=model)
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning: --prio 3")]
    assert len(warnings) == 1, proc.stderr
    assert "refused" in warnings[0] and "CAP_SYS_NICE" in warnings[0], warnings[0]
    assert proc.stdout.startswith("Once upon a time") and len(proc.stdout) > len("Once upon a time")
