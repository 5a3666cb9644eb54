// The chat page: a conversation kept in the page, each answer streamed from POST /v1/chat/completions
// (server-sent events read from fetch's body), reasoning_content shown apart in a collapsible block,
// Markdown rendered by markdown.js. Stop aborts the fetch: the server sees the connection close and
// cancels the generation at its next step. Settings and the API key live in localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const SETTINGS = ["system", "temperature", "top_p", "top_k", "min_p", "max_tokens", "seed"];
const conversation = [];  // {role, content} sent back each turn (the reasoning is not)
let controller = null;    // the AbortController of the answer being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem("tandem.apiKey");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function loadSettings() {
  for (const id of SETTINGS) $(id).value = localStorage.getItem("tandem." + id) ?? "";
  $("api_key").value = localStorage.getItem("tandem.apiKey") ?? "";
  for (const id of SETTINGS) $(id).addEventListener("change", () => localStorage.setItem("tandem." + id, $(id).value));
  $("api_key").addEventListener("change", () => localStorage.setItem("tandem.apiKey", $("api_key").value));
}

// The request body: the conversation, the system prompt first, and the settings that are filled in.
function requestBody() {
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
  messages.push(...conversation);
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const id of ["temperature", "top_p", "min_p"]) if ($(id).value !== "") body[id] = parseFloat($(id).value);
  for (const id of ["top_k", "max_tokens", "seed"]) if ($(id).value !== "") body[id] = parseInt($(id).value, 10);
  return body;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  if (role === "user") div.textContent = text;
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

// An assistant message: a reasoning block (hidden until there is reasoning), the content, a meta line.
function assistantView() {
  const div = addMessage("assistant");
  div.dataset.state = "streaming";
  div.innerHTML = '<details class="reasoning" hidden open><summary>Reasoning</summary><div class="body"></div></details>' +
                  '<div class="content"></div><div class="meta">…</div>';
  let reasoning = "", content = "", queued = false;
  const draw = () => {
    queued = false;
    const r = div.querySelector(".reasoning");
    if (reasoning) {
      r.hidden = false;
      r.querySelector(".body").textContent = reasoning;
    }
    div.querySelector(".content").innerHTML = Markdown.render(content);
    div.scrollIntoView({ block: "end" });
  };
  return {
    div,
    add(delta) {
      if (delta.reasoning_content) reasoning += delta.reasoning_content;
      if (delta.content) {
        // The answer has started: fold the reasoning away (a click opens it again).
        if (!content && reasoning) div.querySelector(".reasoning").open = false;
        content += delta.content;
      }
      if (!queued) { queued = true; requestAnimationFrame(draw); }
    },
    finish(state, meta) {
      draw();
      div.dataset.state = state;
      div.querySelector(".meta").textContent = meta;
      return content;
    },
  };
}

// Reads a text/event-stream body, calling onEvent with each data payload until [DONE] or the end.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

async function send(text) {
  conversation.push({ role: "user", content: text });
  addMessage("user", text);
  const view = assistantView();
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const t0 = performance.now();
  let usage = null, finish = null;
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers: headers(),
                                                      body: JSON.stringify(requestBody()), signal: controller.signal });
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new Error(body && body.error ? body.error.message : "HTTP " + res.status);
    }
    await readEvents(res, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices || []) {
        if (c.delta) view.add(c.delta);
        if (c.finish_reason) finish = c.finish_reason;
      }
    });
    const seconds = (performance.now() - t0) / 1000;
    let meta = finish === "length" ? "stopped at the token limit" : "done";
    if (usage) meta += ` · ${usage.completion_tokens} tokens in ${seconds.toFixed(1)} s` +
                       ` (${(usage.completion_tokens / seconds).toFixed(1)} tok/s)`;
    conversation.push({ role: "assistant", content: view.finish("done", meta) });
  } catch (e) {
    if (e.name === "AbortError") {
      const content = view.finish("stopped", "stopped");
      if (content) conversation.push({ role: "assistant", content });
      else conversation.pop();  // nothing came back: the question is asked again next time
    } else {
      view.finish("error", "error: " + e.message);
      conversation.pop();
    }
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value;
  if (!text.trim() || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  conversation.length = 0;
  $("messages").innerHTML = "";
});

loadSettings();
fetch("/v1/models", { headers: headers() }).then((r) => r.json()).then((j) => {
  $("model").textContent = j.data[0].id;
}).catch(() => {});
