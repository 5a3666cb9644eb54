// The live monitor: polls GET /monitor/stats once a second and draws rolling charts on <canvas> by hand
// (no library, nothing fetched from outside the machine). The lines drawn and the hints come from the
// server's JSON ("lines", "hints"), so this page, tandem top and /metrics tell the same story.
"use strict";

const KEEP = 120;        // samples on screen: two minutes at one a second
const PERIOD_MS = 1000;
const history = [];

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const $ = (id) => document.getElementById(id);
const pct = (x) => (x == null ? "–" : (100 * x).toFixed(0) + "%");
const gbs = (x) => (x == null ? "–" : (x / 1e9).toFixed(x >= 1e10 ? 0 : 1) + " GB/s");
const bytes = (x) => {
  if (x == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; ++i; }
  return x.toFixed(i ? 1 : 0) + " " + units[i];
};

function apiHeaders() {
  const key = localStorage.getItem("tandem.apiKey");
  return key ? { Authorization: "Bearer " + key } : {};
}

// series: [{label, color, values}], values aligned to the right edge (newest last); max: fixed top or
// null (fits the data); line: {value, label} drawn dashed; format: axis labels; empty: text instead.
function draw(canvas, { series = [], max = null, line = null, format = (v) => v.toFixed(1), empty = null }) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  if (empty) {
    g.fillStyle = css("--muted");
    g.textAlign = "center";
    g.fillText(empty, w / 2, h / 2);
    canvas.dataset.points = "0";
    return;
  }
  const left = 46, right = w - 6, top = 16, bottom = h - 14;
  let top_value = max;
  if (top_value == null) {
    top_value = line ? line.value * 1.2 : 0;
    for (const s of series) for (const v of s.values) if (v != null && v > top_value) top_value = v;
    top_value = top_value > 0 ? top_value * 1.15 : 1;
  }
  const y = (v) => bottom - (Math.min(v, top_value) / top_value) * (bottom - top);
  const x = (i, n) => right - ((n - 1 - i) / (KEEP - 1)) * (right - left);
  g.strokeStyle = css("--line");
  g.fillStyle = css("--muted");
  g.lineWidth = 1;
  g.textAlign = "right";
  for (const f of [0, 0.5, 1]) {
    const yy = y(top_value * f);
    g.beginPath(); g.moveTo(left, yy); g.lineTo(right, yy); g.stroke();
    g.fillText(format(top_value * f), left - 4, yy + 4);
  }
  if (line) {
    g.strokeStyle = css("--bad");
    g.setLineDash([5, 4]);
    g.beginPath(); g.moveTo(left, y(line.value)); g.lineTo(right, y(line.value)); g.stroke();
    g.setLineDash([]);
    g.fillStyle = css("--bad");
    g.textAlign = "left";
    g.fillText(line.label, left + 4, y(line.value) - 4);
  }
  let n_points = 0;
  for (const s of series) {
    g.strokeStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      const px = x(i, s.values.length), py = y(v);
      if (pen) g.lineTo(px, py); else g.moveTo(px, py);
      pen = true;
      ++n_points;
    });
    g.stroke();
  }
  g.textAlign = "left";
  let lx = left;
  for (const s of series) {
    g.fillStyle = s.color;
    g.fillRect(lx, 4, 10, 3);
    g.fillStyle = css("--fg");
    g.fillText(s.label, lx + 14, 10);
    lx += 20 + g.measureText(s.label).width;
  }
  canvas.dataset.points = String(n_points);
}

const kv_slots = (s) => s.kv.slots.length;

function render() {
  const last = history[history.length - 1];
  const col = (f) => history.map(f);
  const blue = css("--accent"), orange = "#f59e0b", green = css("--good"), gray = css("--muted");
  $("model").textContent = last.model;
  $("hints").innerHTML = "";
  const hints = last.hints.length ? last.hints : ["every figure is within its line"];
  for (const text of hints) {
    const li = document.createElement("li");
    li.textContent = text;
    if (!last.hints.length) li.className = "ok";
    $("hints").appendChild(li);
  }

  $("now-tokens").textContent = last.tokens_per_s.toFixed(1) + " tok/s generated, " +
    last.prompt_tokens_per_s.toFixed(0) + " prompt";
  draw($("chart-tokens"), { series: [{ label: "generated", color: blue, values: col((s) => s.tokens_per_s) },
                                     { label: "prompt", color: gray, values: col((s) => s.prompt_tokens_per_s) }] });

  const bw = last.bandwidth, limit = bw.limit_bytes_per_s;
  $("now-bandwidth").textContent = limit ? `${gbs(bw.bytes_per_s)} of ${gbs(limit)} measured (${pct(bw.ratio)})`
                                         : `${gbs(bw.bytes_per_s)} (limit being measured)`;
  draw($("chart-bandwidth"), {
    series: [{ label: bw.device + " weights read", color: blue, values: col((s) => s.bandwidth.bytes_per_s) }],
    max: limit ? limit * 1.05 : null, format: (v) => (v / 1e9).toFixed(0) + "G",
    line: limit ? { value: last.lines.bandwidth * limit, label: pct(last.lines.bandwidth) + " of RAM bandwidth" } : null });

  if (last.gpu == null || last.gpu.length === 0) {
    $("now-gpu").textContent = "no GPU";
    draw($("chart-gpu"), { empty: last.gpu == null ? "no GPU (no NVIDIA driver found)" : "no GPU answered NVML" });
  } else {
    $("now-gpu").textContent = last.gpu.map((d) => `GPU${d.index} ${pct(d.utilization)}, ${bytes(d.memory_used_bytes)}`).join(" · ");
    draw($("chart-gpu"), {
      series: last.gpu.map((d, k) => ({ label: "GPU" + d.index, color: [blue, orange, green, gray][k % 4],
                                        values: col((s) => (s.gpu && s.gpu[k] ? s.gpu[k].utilization * 100 : null)) })),
      max: 100, format: (v) => v.toFixed(0) + "%", line: { value: last.lines.gpu * 100, label: pct(last.lines.gpu) } });
  }

  if (last.cpu == null) {
    $("now-cpu").textContent = "–";
    draw($("chart-cpu"), { empty: "waiting for the first /proc/stat sample" });
  } else {
    $("now-cpu").textContent = `busy ${pct(last.cpu.busy)}, softirq ${pct(last.cpu.softirq)}, iowait ${pct(last.cpu.iowait)}`;
    draw($("chart-cpu"), {
      series: [{ label: "busy", color: blue, values: col((s) => (s.cpu ? s.cpu.busy * 100 : null)) },
               { label: "softirq", color: orange, values: col((s) => (s.cpu ? s.cpu.softirq * 100 : null)) },
               { label: "iowait", color: gray, values: col((s) => (s.cpu ? s.cpu.iowait * 100 : null)) }],
      max: 100, format: (v) => v.toFixed(0) + "%", line: { value: last.lines.softirq * 100, label: "softirq " + pct(last.lines.softirq) } });
  }

  $("now-queue").textContent = `${last.requests.processing} processing, ${last.requests.queued} queued, ` +
    `${last.requests.rejected_total} rejected`;
  draw($("chart-queue"), {
    series: [{ label: "processing", color: blue, values: col((s) => s.requests.processing) },
             { label: "queued", color: orange, values: col((s) => s.requests.queued) }],
    max: Math.max(kv_slots(last), ...col((s) => s.requests.queued)),
    format: (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)) });

  const kv = last.kv;
  $("now-kv").textContent = `${kv.used} of ${kv.capacity} cells (${pct(kv.ratio)}); per slot: ` +
    kv.slots.map((s) => s.cells).join(", ");
  draw($("chart-kv"), { series: [{ label: "used", color: blue, values: col((s) => (s.kv.ratio ?? 0) * 100) }],
                        max: 100, format: (v) => v.toFixed(0) + "%", line: { value: last.lines.kv * 100, label: pct(last.lines.kv) } });

  $("now-experts").textContent = last.experts == null ? "n/a" :
    `${last.experts.hit_rate == null ? "–" : pct(last.experts.hit_rate)} hits, disk ${gbs(last.experts.disk_read_bytes_per_s)}`;
  draw($("chart-experts"), last.experts == null ? { empty: "n/a: every expert is in RAM (no --expert-cache)" }
    : { series: [{ label: "hits", color: green,
                   values: col((s) => (s.experts && s.experts.hit_rate != null ? s.experts.hit_rate * 100 : null)) }],
        max: 100, format: (v) => v.toFixed(0) + "%", line: { value: last.lines.experts * 100, label: pct(last.lines.experts) } });

  const rows = [["device", "memory used", "free", "weights/pass", "read", "limit"]];
  for (const d of last.devices)
    rows.push([d.name, bytes(d.memory_used_bytes), bytes(d.memory_free_bytes), bytes(d.weight_bytes_per_pass),
               gbs(d.read_bytes_per_s), d.read_limit_bytes_per_s ? gbs(d.read_limit_bytes_per_s) : "–"]);
  $("devices").innerHTML = "";
  rows.forEach((r, i) => {
    const tr = document.createElement("tr");
    for (const c of r) {
      const td = document.createElement(i ? "td" : "th");
      td.textContent = c;
      tr.appendChild(td);
    }
    $("devices").appendChild(tr);
  });
}

async function poll() {
  try {
    const res = await fetch("/monitor/stats", { headers: apiHeaders(), cache: "no-store" });
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new Error(body && body.error ? body.error.message : "HTTP " + res.status);
    }
    history.push(await res.json());
    if (history.length > KEEP) history.shift();
    render();
    $("status").textContent = `updated ${new Date().toLocaleTimeString()} · ${history.length} samples`;
    $("status").dataset.samples = String(history.length);
  } catch (e) {
    $("status").textContent = "cannot read /monitor/stats: " + e.message;
  }
  setTimeout(poll, PERIOD_MS);
}

window.addEventListener("resize", () => history.length && render());
poll();
