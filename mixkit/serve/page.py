"""`GET /`: one self-contained page (inline CSS and script, no CDN: it works offline) that calls the server's
own API. Pick or drop an image, pick a task among those the model serves, see the caption, the answer, the
label probabilities or the chat reply (streamed). An AppFlow app the server loaded is a task too: its form is
built from the app's inputs and parameters, and its answer shown as text (labels with scores) and media (the
drawn picture with boxes, labels and masks; generated images, GIFs and sounds), all from the answer's data URIs."""

from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mixkit · __TITLE__</title>
<style>
  :root { --ink: #1d2330; --muted: #667085; --line: #d0d5dd; --accent: #2f6fde; --soft: #eef4ff; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
         background: #f6f7f9; }
  header { padding: 14px 24px; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 18px; } header span { color: var(--muted); font-size: 13px; }
  main { display: grid; grid-template-columns: minmax(260px, 380px) 1fr; gap: 20px; padding: 20px 24px;
         max-width: 1100px; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px; }
  #drop { border: 2px dashed var(--line); border-radius: 10px; min-height: 220px; display: flex;
          align-items: center; justify-content: center; text-align: center; color: var(--muted);
          cursor: pointer; overflow: hidden; }
  #drop.over { border-color: var(--accent); background: var(--soft); }
  #drop img { max-width: 100%; max-height: 320px; display: block; image-rendering: pixelated; }
  label { display: block; font-size: 13px; color: var(--muted); margin: 12px 0 4px; }
  select, input[type=text], textarea { width: 100%; padding: 8px 10px; border: 1px solid var(--line);
          border-radius: 8px; font: inherit; }
  button { margin-top: 14px; padding: 9px 18px; border: 0; border-radius: 8px; background: var(--accent);
           color: #fff; font: inherit; cursor: pointer; }
  button:disabled { opacity: .5; cursor: wait; }
  #result { font-size: 18px; min-height: 28px; white-space: pre-wrap; }
  #error { color: #b42318; white-space: pre-wrap; }
  .meta { color: var(--muted); font-size: 12px; margin-top: 8px; }
  .bar { display: grid; grid-template-columns: 140px 1fr 60px; gap: 8px; align-items: center; margin: 4px 0; }
  .bar div { background: var(--accent); height: 12px; border-radius: 6px; }
  .turn { margin: 6px 0; } .turn b { color: var(--muted); font-weight: 600; }
  .hidden { display: none; }
  #media img { max-width: 100%; display: block; margin-top: 10px; border-radius: 6px; }
  #media audio { display: block; margin-top: 10px; width: 100%; }
</style>
</head>
<body>
<header><h1>mixkit serve</h1><span>model <code>__TITLE__</code> · tasks __TASK_LIST__ ·
  <a href="/health">health</a> · <a href="/metrics">metrics</a></span></header>
<main>
  <section class="card">
    <div id="drop" tabindex="0"><span>Drop an image here<br>or click to choose one</span></div>
    <input id="file" type="file" accept="image/*" class="hidden">
    <label for="task">Task</label>
    <select id="task"></select>
    <div data-task="caption"><label for="prompt">Prompt (optional)</label>
      <input id="prompt" type="text" placeholder="the checkpoint's own"></div>
    <div data-task="vqa"><label for="question">Question</label>
      <input id="question" type="text" placeholder="what is in the picture?"></div>
    <div data-task="classify"><label for="labels">Labels, comma-separated</label>
      <input id="labels" type="text" placeholder="cat, dog, car"></div>
    <div data-task="chat"><label for="message">Message</label>
      <textarea id="message" rows="3" placeholder="Describe the image."></textarea></div>
    <div data-task="app" id="appfields"></div>
    <button id="run">Run</button>
  </section>
  <section class="card">
    <div id="chatlog"></div>
    <div id="result" aria-live="polite"></div>
    <div id="media"></div>
    <div id="error"></div>
    <div id="meta" class="meta"></div>
  </section>
</main>
<script>
const TASKS = __TASKS__, APPS = __APPS__;
const $ = (id) => document.getElementById(id);
let imageFile = null, history = [];

for (const task of TASKS.concat(Object.keys(APPS))) { const o = document.createElement("option"); o.value = o.textContent = task;
                            $("task").appendChild(o); }
function showInputs() {
  const task = $("task").value, kind = APPS[task] ? "app" : task;
  document.querySelectorAll("[data-task]").forEach(el => el.classList.toggle("hidden", el.dataset.task !== kind));
  if (APPS[task]) buildAppForm(task);
}
function buildAppForm(name) {  // one field per text input, file input (besides the image) and parameter
  const app = APPS[name], note = document.createElement("div");
  note.className = "meta"; note.textContent = app.description;
  $("appfields").replaceChildren(note);
  const fields = app.inputs.filter(key => key !== "image").map(key => [key, ""])
    .concat(Object.entries(app.params).map(([key, value]) => [key, value === null ? "the app's default" : String(value)]));
  for (const [key, hint] of fields) {
    const label = document.createElement("label"), input = document.createElement("input");
    label.textContent = key; label.htmlFor = input.id = "app-" + key; input.dataset.key = key;
    if (key === "audio") { input.type = "file"; input.accept = "audio/wav"; }
    else { input.type = "text"; input.placeholder = hint; }
    $("appfields").append(label, input);
  }
}
$("task").addEventListener("change", () => { history = []; $("chatlog").textContent = ""; showInputs(); });
showInputs();

function useFile(file) {
  if (!file) return;
  imageFile = file; history = []; $("chatlog").textContent = "";
  const img = document.createElement("img"); img.alt = file.name; img.src = URL.createObjectURL(file);
  $("drop").replaceChildren(img);
}
$("drop").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => useFile($("file").files[0]));
["dragenter", "dragover"].forEach(t => $("drop").addEventListener(t, e => { e.preventDefault();
  $("drop").classList.add("over"); }));
["dragleave", "drop"].forEach(t => $("drop").addEventListener(t, e => { e.preventDefault();
  $("drop").classList.remove("over"); }));
$("drop").addEventListener("drop", e => useFile(e.dataTransfer.files[0]));

async function runApp(name) {
  const form = new FormData();
  if (imageFile && APPS[name].inputs.includes("image")) form.append("image", imageFile);
  document.querySelectorAll("#appfields input").forEach(input => {
    if (input.type === "file") { if (input.files[0]) form.append(input.dataset.key, input.files[0]); }
    else if (input.value) form.append(input.dataset.key, input.value);
  });
  const response = await fetch("/v1/apps/" + encodeURIComponent(name), { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  showApp(body);
}
function mediaElement(uri) {
  const element = document.createElement(uri.startsWith("data:audio/") ? "audio" : "img");
  element.src = uri; if (element.tagName === "AUDIO") element.controls = true; return element;
}
function showApp(body) {  // text fields and labels as lines; the drawn picture (or the masks), images, sounds
  const lines = [], media = [], isMedia = v => typeof v === "string" && v.startsWith("data:");
  for (const [key, value] of Object.entries(body)) {
    const values = Array.isArray(value) ? value : [value];
    if (values.length && values.every(isMedia)) {
      if (!(key === "seg_masks" && body.picture)) media.push(...values);  // the picture draws the masks
    } else if (key === "labels") {
      value.forEach((label, i) => lines.push(label + (body.scores ? "  " + body.scores[i].toFixed(3) : "")));
    } else if (typeof value === "string" && !["image", "audio"].includes(key)) lines.push(key + ": " + value);
  }
  if (body.picture) media.unshift(media.splice(media.indexOf(body.picture), 1)[0]);
  $("result").textContent = lines.join("\\n");
  $("media").replaceChildren(...media.map(mediaElement));
}
async function postForm(path, fields) {
  const form = new FormData(); form.append("image", imageFile);
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  const response = await fetch(path, { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function dataUri(file) {
  return new Promise((ok, fail) => { const r = new FileReader(); r.onload = () => ok(r.result);
                                     r.onerror = fail; r.readAsDataURL(file); });
}
function addTurn(role, text) {
  const div = document.createElement("div"); div.className = "turn";
  const who = document.createElement("b"); who.textContent = role + ": ";
  const span = document.createElement("span"); span.textContent = text;
  div.append(who, span); $("chatlog").appendChild(div); return span;
}
async function chat() {
  const text = $("message").value.trim();
  if (!text) throw new Error("write a message");
  const content = [{ type: "text", text }];
  if (history.length === 0) content.push({ type: "image_url", image_url: { url: await dataUri(imageFile) } });
  history.push({ role: "user", content });
  addTurn("user", text); $("message").value = "";
  const span = addTurn("assistant", "");
  const response = await fetch("/v1/chat/completions", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ messages: history, stream: true }) });
  if (!response.ok) { history.pop(); throw new Error((await response.json()).error); }
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "", reply = "";
  for (;;) {
    const { value, done } = await reader.read(); if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const line = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const event = JSON.parse(line.slice(6));
      if (event.error) throw new Error(event.error.message);
      reply += event.choices[0].delta.content || ""; span.textContent = reply;
    }
  }
  history.push({ role: "assistant", content: reply });
  return reply;
}
function showBars(body) {
  const order = body.labels.map((l, i) => [l, body.probs[i]]).sort((a, b) => b[1] - a[1]);
  $("result").replaceChildren(...order.map(([label, p]) => {
    const row = document.createElement("div"); row.className = "bar";
    const name = document.createElement("span"); name.textContent = label;
    const bar = document.createElement("div"); bar.style.width = (100 * p).toFixed(1) + "%";
    const value = document.createElement("span"); value.textContent = p.toFixed(3);
    row.append(name, bar, value); return row; }));
}
$("run").addEventListener("click", async () => {
  $("error").textContent = ""; $("meta").textContent = ""; $("media").replaceChildren();
  const task = $("task").value, start = performance.now();
  if (!imageFile && (!APPS[task] || APPS[task].inputs.includes("image"))) {
    $("error").textContent = "Choose an image first."; return; }
  $("run").disabled = true;
  try {
    if (task === "caption") $("result").textContent = (await postForm("/v1/caption",
      { prompt: $("prompt").value })).caption;
    else if (task === "vqa") $("result").textContent = (await postForm("/v1/vqa",
      { question: $("question").value })).answer;
    else if (APPS[task]) await runApp(task);
    else if (task === "classify") showBars(await postForm("/v1/classify", { labels: $("labels").value }));
    else { $("result").textContent = ""; await chat(); }
    $("meta").textContent = task + " · " + Math.round(performance.now() - start) + " ms";
  } catch (error) { $("error").textContent = error.message; }
  finally { $("run").disabled = false; document.body.dataset.runs = (+document.body.dataset.runs || 0) + 1; }
});
</script>
</body>
</html>
"""


def _script_json(value: object) -> str:
    return json.dumps(value).replace("<", "\\u003c")  # inside <script>: no "</script>" can appear


def render_page(model_name: str, tasks: list[str], apps: dict[str, dict] | None = None) -> str:
    """The page for this model: its name, and a task picker holding the tasks it serves and its apps (by name:
    inputs, params, description, as `ServedApps.describe` gives them)."""
    title = html.escape(model_name)
    names = [*tasks, *(apps or {})]
    return (_PAGE.replace("__TITLE__", title).replace("__TASK_LIST__", html.escape(", ".join(names) or "none"))
            .replace("__TASKS__", _script_json(tasks)).replace("__APPS__", _script_json(apps or {})))
