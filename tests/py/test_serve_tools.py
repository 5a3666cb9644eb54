"""Tool calls and reasoning through `tandem serve` with real chat templates (tests/fixtures/chat/templates)
on Gemma 3 270M and the real `openai` client. Gemma never calls a tool by itself, so the calls are forced
the way llama-server forces them: tool_choice "required" or a named function holds the output to the
template's call format with a grammar, and the parsed message.tool_calls must be exactly what the
grammar let through. Reasoning is forced with llama-server's `grammar` field under an R1 template that
opens <think> in the prompt."""
import copy
import json
import sys

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

from conftest import ROOT  # noqa: E402
from serve_util import Server  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts" / "fixtures"))
gen_chat = pytest.importorskip("gen_chat")  # jinja2 with Hugging Face's settings, as the fixtures use

TEMPLATES = ROOT / "tests" / "fixtures" / "chat" / "templates"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 24}},
                                     "required": ["query"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def start(gemma_path, template, *flags):
    return Server(gemma_path, "-c", "2048", "-np", "2", "--temp", "0", "-a", "gemma",
                  "--chat-template-file", TEMPLATES / template, *flags)


@pytest.fixture(scope="module", params=["Qwen-Qwen2.5-7B-Instruct.jinja", "deepseek-ai-DeepSeek-V3.1.jinja"])
def tools_server(request, gemma_path):
    s = start(gemma_path, request.param)
    # Tokens one call takes: Gemma's vocabulary spells DeepSeek's call markers out byte by byte.
    s.call_tokens = 110 if "DeepSeek" in request.param else 40
    s.template = request.param
    yield s
    assert s.stop() == 0, "".join(s.log)


def client_of(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def check_call(call, tool):
    assert call.type == "function"
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_required_tool_call(tools_server):
    r = client_of(tools_server).chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER, SEARCH],
                                                        tool_choice="required", max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    check_call(call, WEATHER if call.function.name == "get_weather" else SEARCH)
    assert call.id


def test_named_tool_call_streams_the_same_call(tools_server):
    client = client_of(tools_server)
    kw = dict(model="gemma", messages=ASK, tools=[WEATHER, SEARCH], max_tokens=200,
              tool_choice={"type": "function", "function": {"name": "search"}})
    whole = client.chat.completions.create(**kw).choices[0].message.tool_calls
    assert len(whole) == 1
    check_call(whole[0], SEARCH)
    again = client.chat.completions.create(**kw).choices[0].message.tool_calls
    assert again[0].id != whole[0].id  # ids unique across replies: clients match results by them
    calls, finish = {}, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for d in chunk.choices[0].delta.tool_calls or []:
            c = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            c["id"] += d.id or ""
            c["name"] += d.function.name or ""
            c["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [("search", whole[0].function.arguments)]
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] not in (whole[0].id, again[0].id)


def test_tool_result_goes_back_to_the_template(tools_server):
    client = client_of(tools_server)
    call = client.chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER], tool_choice="required",
                                          max_tokens=200).choices[0].message.tool_calls[0]
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    status, rendered = tools_server.request("POST", "/apply-template", {"messages": history, "tools": [WEATHER]})
    assert status == 200, rendered
    assert "18 degrees and sunny" in rendered["prompt"] and "get_weather" in rendered["prompt"]
    r = client.chat.completions.create(model="gemma", messages=history, tools=[WEATHER], tool_choice="none",
                                       max_tokens=12)
    assert r.choices[0].message.tool_calls is None
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content


def test_parallel_calls_each_sent_when_whole(tools_server):
    # Gemma keeps calling until max_tokens cuts it off: the reply keeps the calls it completed, which a
    # stream sends one by one as each closes.
    client = client_of(tools_server)
    kw = dict(model="gemma", messages=[{"role": "user", "content": "Weather in Paris and in Rome?"}], tools=[WEATHER],
              tool_choice="required", parallel_tool_calls=True,
              max_tokens=int(2.5 * tools_server.call_tokens))
    r = client.chat.completions.create(**kw)
    calls = r.choices[0].message.tool_calls
    assert len(calls) >= 2, r
    assert len({c.id for c in calls}) == len(calls)
    for c in calls:
        check_call(c, WEATHER)
    streamed, indexes = [], []
    for chunk in client.chat.completions.create(stream=True, **kw):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            indexes.append(d.index)
            streamed.append(d.function.arguments)
    assert indexes == list(range(len(calls)))  # one delta per call, in order
    assert streamed == [c.function.arguments for c in calls]
    assert r.choices[0].finish_reason in ("length", "tool_calls")


@pytest.mark.parametrize("body, needle", [
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "get_time"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required", "tools": None}, "no tools"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
      "tool_choice": "required"}, "'not'"),
    ({"chat_template_kwargs": [1]}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"messages": []}}, "'messages'"),
    ({"tools": ["x"]}, "tools[0]"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}, "parameters"),
    ({"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}, "arguments"),
    ({"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]}]}, "tool_calls[0]"),
])
def test_bad_tool_requests_are_400(tools_server, body, needle):
    req = {"messages": ASK, "tools": [WEATHER], "max_tokens": 4, **body}
    status, reply = tools_server.request("POST", "/v1/chat/completions", req)
    assert status == 400, reply
    assert needle in reply["error"]["message"]


# A tool-call conversation as the openai client sends it: arguments as JSON text, content null, tools with
# keys in the client's order (not sorted), a tool result, and an assistant turn to continue.
CALL = {"id": "abcdefghi", "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"unit": "celsius", "city": "Paris"})}}
HISTORY = ASK + [{"role": "assistant", "content": None, "tool_calls": [CALL]},
                 {"role": "tool", "tool_call_id": "abcdefghi", "name": "get_weather", "content": "18 degrees"}]


def jinja2_render(server, messages, tools, add_generation_prompt=True):
    """What Hugging Face's apply_chat_template renders: arguments as objects (its documented format)."""
    _, props = server.request("GET", "/props")
    msgs = copy.deepcopy(messages)
    for m in msgs:
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    ctx = {"messages": msgs, "tools": tools, "add_generation_prompt": add_generation_prompt,
           "bos_token": props["bos_token"], "eos_token": props["eos_token"]}
    return gen_chat.render(gen_chat.make_env(), props["chat_template"], ctx)


def check_rendering(server, messages, tools, **kw):
    want = jinja2_render(server, messages, tools, **kw)
    status, got = server.request("POST", "/apply-template", {"messages": messages, "tools": tools, **kw})
    if "error" in want:
        assert status == 400, (want, got)
    else:
        assert status == 200, got
        assert got["prompt"] == want["output"]


def test_tool_history_renders_as_jinja2(tools_server):
    check_rendering(tools_server, HISTORY, [WEATHER, SEARCH])
    check_rendering(tools_server, ASK, [WEATHER], add_generation_prompt=False)


@pytest.mark.parametrize("template", ["meta-llama-Llama-3.1-8B-Instruct.jinja", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
                                      "mistralai-Mistral-Nemo-Instruct-2407.jinja", "Qwen-Qwen3-0.6B.jinja"])
def test_tool_history_renders_as_jinja2_on_more_templates(gemma_path, template):
    s = start(gemma_path, template)
    try:
        check_rendering(s, HISTORY, [WEATHER, SEARCH])
        check_rendering(s, ASK, [WEATHER], add_generation_prompt=False)
    finally:
        assert s.stop() == 0, "".join(s.log)


PARTS = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
         {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]


@pytest.mark.parametrize("template", ["Kimi-K2-Instruct.jinja", "Mistral-Small-3.2-24B-Instruct-2506.jinja"])
def test_content_parts_reach_templates_that_read_them(gemma_path, template):
    s = start(gemma_path, template)
    try:
        check_rendering(s, PARTS, None)
    finally:
        assert s.stop() == 0, "".join(s.log)


def test_content_parts_joined_for_string_templates(tools_server):
    _, joined = tools_server.request("POST", "/apply-template", {"messages": PARTS})
    _, plain = tools_server.request("POST", "/apply-template", {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello\nthere"}]})
    assert joined["prompt"] == plain["prompt"]


def test_last_assistant_message_is_continued(tools_server):
    prefix = [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "My favourite color is"}]
    status, whole = tools_server.request("POST", "/apply-template", {"messages": prefix[:1]})
    status, cont = tools_server.request("POST", "/apply-template", {"messages": prefix})
    assert status == 200 and cont["prompt"] == whole["prompt"] + "My favourite color is"
    r = client_of(tools_server).chat.completions.create(model="gemma", messages=prefix, max_tokens=4)
    assert r.choices[0].message.content  # the continuation alone, not a new turn's opening


def test_text_after_a_call_is_streamed_too(tools_server):
    # Forced text around a Hermes call (a grammar, as llama-server's field): stream and whole agree.
    if "Qwen" not in tools_server.template:
        pytest.skip("the forced text is in the Hermes format")
    call = '<tool_call>\\n{\\"name\\": \\"search\\", \\"arguments\\": {\\"query\\": \\"x\\"}}\\n</tool_call>'
    kw = dict(model="gemma", messages=ASK, tools=[SEARCH], max_tokens=60,
              extra_body={"grammar": f'root ::= "Sure: " "{call}" " done"'})
    client = client_of(tools_server)
    whole = client.chat.completions.create(**kw).choices[0].message
    assert whole.content == "Sure:  done" and whole.tool_calls[0].function.name == "search"
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                   if c.choices)
    assert text == whole.content


THINK_GRAMMAR = 'root ::= "The user asks about " [a-z ]{3,20} "</think>" "Paris is " [a-z ]{3,20}'


@pytest.fixture(scope="module")
def r1_server(gemma_path):
    s = start(gemma_path, "llama-cpp-deepseek-r1.jinja")
    yield s
    assert s.stop() == 0, "".join(s.log)


def test_reasoning_is_split_from_content(r1_server):
    client = client_of(r1_server)
    kw = dict(model="gemma", messages=ASK, max_tokens=40, extra_body={"grammar": THINK_GRAMMAR})
    status, rendered = r1_server.request("POST", "/apply-template", {"messages": ASK})
    assert rendered["prompt"].endswith("<think>\n"), rendered  # the template opens the think block
    msg = client.chat.completions.create(**kw).choices[0].message
    reasoning = msg.model_extra["reasoning_content"]
    assert reasoning.startswith("The user asks about ") and "</think>" not in reasoning
    assert msg.content.startswith("Paris is ") and "<think>" not in msg.content
    # Streamed: the same two texts, whatever tokens the tag was split across.
    parts = {"reasoning_content": "", "content": ""}
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.choices:
            d = chunk.choices[0].delta
            parts["content"] += d.content or ""
            parts["reasoning_content"] += (d.model_extra or {}).get("reasoning_content") or ""
    assert parts == {"reasoning_content": reasoning, "content": msg.content}


def test_reasoning_format_per_request(r1_server):
    msg = client_of(r1_server).chat.completions.create(
        model="gemma", messages=ASK, max_tokens=40,
        extra_body={"grammar": THINK_GRAMMAR, "reasoning_format": "none"}).choices[0].message
    assert "reasoning_content" not in (msg.model_extra or {})
    assert msg.content.startswith("The user asks about ") and "</think>Paris is " in msg.content


def test_reasoning_format_none_keeps_everything_in_content(gemma_path):
    s = start(gemma_path, "llama-cpp-deepseek-r1.jinja", "--reasoning-format", "none")
    try:
        msg = client_of(s).chat.completions.create(model="gemma", messages=ASK, max_tokens=40,
                                                   extra_body={"grammar": THINK_GRAMMAR}).choices[0].message
        assert "reasoning_content" not in (msg.model_extra or {})
        assert msg.content.startswith("The user asks about ") and "</think>Paris is " in msg.content
    finally:
        assert s.stop() == 0, "".join(s.log)


def test_thinking_switch_reaches_the_template(gemma_path):
    # Qwen3's template reads enable_thinking: false writes an empty think block into the prompt.
    s = start(gemma_path, "Qwen-Qwen3-0.6B.jinja", "--reasoning-budget", "0")
    try:
        _, off = s.request("POST", "/apply-template", {"messages": ASK})
        _, on = s.request("POST", "/apply-template", {"messages": ASK, "chat_template_kwargs": {"enable_thinking": True}})
        assert off["prompt"].endswith("<think>\n\n</think>\n\n"), off
        assert not on["prompt"].endswith("</think>\n\n"), on
    finally:
        assert s.stop() == 0, "".join(s.log)
