"""The web pages in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
Selenium against tandem serve on Gemma 3 270M. The chat page streams an answer equal to the API's
greedy reply, stops a generation (the server counts it cancelled), shows reasoning apart and renders
Markdown with every tag escaped, fits a phone's width; /monitor's charts grow as samples arrive.
Screenshots go to build/test-artifacts/ (or $TANDEM_TEST_ARTIFACTS)."""
import os
import pathlib
import shutil
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (scripts/setup.sh)")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from conftest import ROOT, TANDEM  # noqa: E402
from serve_util import Server  # noqa: E402

ARTIFACTS = pathlib.Path(os.environ.get("TANDEM_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))


@pytest.fixture(scope="module")
def server(gemma_path):
    s = Server(gemma_path, "-c", "2048", "-np", "2", "--temp", "0", "--metrics")
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Chromium or its driver is not installed (scripts/setup.sh installs Debian's chromium and "
                    "chromium-driver)")
    options = Options()
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"]:
        options.add_argument(arg)
    options.binary_location = chromium
    # The driver's path given: Selenium would otherwise try to download one.
    d = webdriver.Chrome(options=options, service=Service(driver))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield d
    d.quit()


def wait(fn, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def open_chat(browser, server, **settings):
    browser.get(server.url + "/")
    browser.execute_script("localStorage.clear()")
    browser.get(server.url + "/")
    for name, v in settings.items():
        el = browser.find_element(By.ID, name)
        browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))",
                               el, str(v))


def ask(browser, text):
    browser.find_element(By.ID, "input").send_keys(text)
    browser.find_element(By.ID, "send").click()
    return wait(lambda: (browser.find_elements(By.CSS_SELECTOR, ".msg.assistant") or [None])[-1], what="an answer")


def test_chat_streams_the_greedy_answer(browser, server):
    open_chat(browser, server, temperature=0, max_tokens=40)
    msg = ask(browser, "Tell me about the sea.")
    lengths = set()
    wait(lambda: lengths.add(len(msg.find_element(By.CLASS_NAME, "content").text)) or
         msg.get_attribute("data-state") != "streaming", what="the end of the answer")
    browser.save_screenshot(str(ARTIFACTS / "chat.png"))
    assert msg.get_attribute("data-state") == "done", msg.text
    assert len(lengths) > 2, f"the answer did not arrive in pieces: {lengths}"
    status, r = server.request("POST", "/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "Tell me about the sea."}],
                                "temperature": 0, "max_tokens": 40})
    assert status == 200
    expected = browser.execute_script("return Markdown.render(arguments[0])", r["choices"][0]["message"]["content"])
    assert msg.find_element(By.CLASS_NAME, "content").get_attribute("innerHTML") == expected
    assert "tok/s" in msg.find_element(By.CLASS_NAME, "meta").text


def test_stop_cancels_the_generation_on_the_server(browser, server):
    def cancelled():
        status, text = server.request("GET", "/metrics")
        line = next(l for l in text.splitlines() if l.startswith('tandem_requests_total{reason="cancelled"}'))
        return float(line.split()[-1])

    before = cancelled()
    open_chat(browser, server, max_tokens=900)
    msg = ask(browser, "Count from one to one thousand in words.")
    wait(lambda: msg.find_element(By.CLASS_NAME, "content").text, what="the first words")
    browser.find_element(By.ID, "stop").click()
    wait(lambda: msg.get_attribute("data-state") == "stopped", timeout=10, what="the stopped state")
    browser.save_screenshot(str(ARTIFACTS / "chat-stopped.png"))
    wait(lambda: cancelled() == before + 1, timeout=10, what="the server to cancel the generation")
    status, slots = server.request("GET", "/slots")
    assert not any(s["is_processing"] for s in slots)
    assert browser.find_element(By.ID, "send").is_enabled()


# An answer with reasoning and Markdown, streamed by a stand-in for fetch: Gemma 3 270M does not reason,
# and the renderer must escape what a model may write.
FAKE_STREAM = r"""
const events = [
  {choices: [{delta: {role: "assistant", reasoning_content: "The user wants <b>code</b>."}}]},
  {choices: [{delta: {reasoning_content: " Keep it short."}}]},
  {choices: [{delta: {content: "# Title\n**bold** and `a<b>` and [link](https://example.org)\n\n"}}]},
  {choices: [{delta: {content: "- one\n- two\n\n```python\nprint('<script>window.pwned=1</script>')\n```\n"}}]},
  {choices: [{delta: {content: "<img src=x onerror=\"window.pwned=2\">"}, finish_reason: "stop"}]},
];
window.fetch = async () => new Response(new ReadableStream({
  start(c) {
    for (const e of events) c.enqueue(new TextEncoder().encode("data: " + JSON.stringify(e) + "\n\n"));
    c.enqueue(new TextEncoder().encode("data: [DONE]\n\n"));
    c.close();
  }}), {status: 200, headers: {"Content-Type": "text/event-stream"}});
"""


def test_reasoning_apart_and_markdown_escaped(browser, server):
    open_chat(browser, server)
    browser.execute_script(FAKE_STREAM)
    msg = ask(browser, "Show me code.")
    wait(lambda: msg.get_attribute("data-state") == "done", what="the end of the answer")
    reasoning = msg.find_element(By.CLASS_NAME, "reasoning")
    assert reasoning.is_displayed() and reasoning.get_attribute("open") is None, "folded once the answer started"
    assert "The user wants <b>code</b>. Keep it short." in reasoning.get_attribute("textContent")
    content = msg.find_element(By.CLASS_NAME, "content")
    assert content.find_element(By.TAG_NAME, "h1").text == "Title"
    assert content.find_element(By.TAG_NAME, "strong").text == "bold"
    assert content.find_element(By.CSS_SELECTOR, "p code").text == "a<b>"
    assert content.find_element(By.TAG_NAME, "a").get_attribute("href") == "https://example.org/"
    assert [li.text for li in content.find_elements(By.TAG_NAME, "li")] == ["one", "two"]
    assert content.find_element(By.CSS_SELECTOR, "pre code").text == "print('<script>window.pwned=1</script>')"
    assert "<img src=x" in content.text
    assert not content.find_elements(By.TAG_NAME, "img") and not content.find_elements(By.TAG_NAME, "script")
    assert browser.execute_script("return window.pwned") is None
    reasoning.find_element(By.TAG_NAME, "summary").click()
    assert reasoning.get_attribute("open") is not None
    browser.save_screenshot(str(ARTIFACTS / "chat-markdown.png"))


def test_phone_width_has_no_sideways_scroll(browser, server):
    browser.set_window_size(390, 844)
    try:
        open_chat(browser, server)
        browser.execute_script(FAKE_STREAM.replace("print(", "print('" + "x" * 300 + "', "))
        msg = ask(browser, "Show me code.")
        wait(lambda: msg.get_attribute("data-state") == "done", what="the end of the answer")
        width = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        assert browser.find_element(By.ID, "send").rect["x"] + browser.find_element(By.ID, "send").rect["width"] <= width
        browser.save_screenshot(str(ARTIFACTS / "chat-phone.png"))
    finally:
        browser.set_window_size(1200, 900)


def test_monitor_charts_update(browser, server):
    browser.get(server.url + "/monitor")
    samples = lambda: int(browser.find_element(By.ID, "status").get_attribute("data-samples") or 0)  # noqa: E731
    points = lambda: int(browser.find_element(By.ID, "chart-tokens").get_attribute("data-points") or 0)  # noqa: E731
    wait(lambda: samples() >= 2, timeout=20, what="two samples")
    first = points()
    status, _ = server.request("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 48})
    assert status == 200
    wait(lambda: points() > first and samples() >= 4, timeout=20, what="the charts to grow")
    assert "tok/s" in browser.find_element(By.ID, "now-tokens").text
    gpu = browser.find_element(By.ID, "now-gpu").text
    assert gpu == "no GPU" or gpu.startswith("GPU")
    assert browser.find_element(By.ID, "now-experts").text == "n/a"
    assert int(browser.find_element(By.ID, "chart-cpu").get_attribute("data-points")) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#hints li")
    browser.save_screenshot(str(ARTIFACTS / "monitor.png"))


def test_monitor_draws_gpu_utilization_with_a_fake_nvml(browser, gemma_path, monkeypatch):
    """The GPU chart with a GPU present: the fake libnvidia-ml.so.1 (tests/monitor/fake_nvml.c) on the
    server's loader path reports GPU 0 40% busy."""
    fake = TANDEM.parents[1] / "fake-nvml"
    if not (fake / "libnvidia-ml.so.1").exists():
        pytest.skip(f"{fake}/libnvidia-ml.so.1 is not built (the tests' CMake target fake_nvml)")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake))
    s = Server(gemma_path, "-c", "256", "-np", "1", "--no-warmup")
    try:
        browser.get(s.url + "/monitor")
        wait(lambda: browser.find_element(By.ID, "now-gpu").text.startswith("GPU0 40%"), timeout=20,
             what="GPU 0's figures")
        wait(lambda: int(browser.find_element(By.ID, "chart-gpu").get_attribute("data-points") or 0) >= 2,
             timeout=20, what="the GPU chart")
        browser.save_screenshot(str(ARTIFACTS / "monitor-gpu.png"))
    finally:
        assert s.stop() == 0, "".join(s.log)


def test_monitor_draws_the_expert_hit_rate(browser, tmp_path):
    """--expert-cache on a tiny DeepSeek-V3 synth (2 MoE layers of 16 experts, 8 cache slots): the experts'
    chart fills, with the hit rate and the disk figure beside it."""
    from conftest import run_tandem
    model = tmp_path / "tiny-v3.gguf"
    run_tandem("synth", "--preset", "tiny-deepseek-v3", "--layers", "3", "--type", "Q8_0", "-t", "2", "-o", model,
               check=True)
    s = Server(model, "-c", "256", "-np", "1", "--no-warmup", "--expert-cache", "64M")
    try:
        browser.get(s.url + "/monitor")
        wait(lambda: int(browser.find_element(By.ID, "status").get_attribute("data-samples") or 0) >= 2, timeout=20,
             what="two samples")  # the sampling has started: the period after them sees the request
        status, _ = s.request("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 32})
        assert status == 200
        wait(lambda: "hits, disk" in browser.find_element(By.ID, "now-experts").text, timeout=20,
             what="the experts' figures")

        def charted():
            # A request per look: on a fast CPU one request's few milliseconds fall in a single sampling period,
            # which the page's own polling can miss; the chart only has points for periods that used experts.
            status, _ = s.request("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 32})
            assert status == 200
            return int(browser.find_element(By.ID, "chart-experts").get_attribute("data-points") or 0) >= 1

        wait(charted, timeout=20, what="the experts' chart")
        browser.save_screenshot(str(ARTIFACTS / "monitor-experts.png"))
    finally:
        assert s.stop() == 0, "".join(s.log)
