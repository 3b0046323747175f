// The explorer page: sends settings to the server (explorer/server.py), polls the job, shows the
// result. The server computes everything; this file only draws. No library, no CDN.

const $ = (id) => document.getElementById(id);
const state = { info: null, job: null, result: null, image: 0, token: null };

// ---- talking to the server -------------------------------------------------------------------

async function post(path, body) {
  const response = await fetch(path, { method: "POST", body: JSON.stringify(body),
                                       headers: { "Content-Type": "application/json" } });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function showStatus(element, html, isError = false) {
  element.innerHTML = html;
  element.classList.toggle("error", isError);
}

// POST a job, then poll it every 250 ms until it is done; returns [job id, result].
async function runJob(path, body, statusElement) {
  const submitted = await post(path, body);
  for (;;) {
    const response = await fetch(`/api/jobs/${submitted.job}`);
    const job = await response.json();
    if (!response.ok) throw new Error(job.error);
    if (job.state === "done") {
      showStatus(statusElement, `done: ${job.total} steps`);
      return [job.id, job.result];
    }
    if (job.state === "failed") throw new Error(job.error);
    showStatus(statusElement, job.state === "queued"
      ? `queued: ${job.position} job${job.position === 1 ? "" : "s"} before this one`
      : `step ${job.done} of ${job.total} <progress max="${job.total}" value="${job.done}"></progress>`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function guarded(button, statusElement, work) {
  button.disabled = true;
  try { await work(); }
  catch (error) { showStatus(statusElement, error.message, true); }
  finally { button.disabled = false; }
}

function settings() {
  const value = (id) => $(id).value;
  const body = { sampler: value("sampler"), steps: Number(value("steps")),
                 eta: Number(value("eta")), seed: Number(value("seed")), n: Number(value("n")) };
  if (state.info.text) {
    Object.assign(body, { prompt: value("prompt"), negative_prompt: value("negative_prompt"),
                          guidance: Number(value("guidance")),
                          guidance_interval: [Number(value("guidance_lo")), Number(value("guidance_hi"))] });
  }
  return body;
}

// ---- drawing a result ------------------------------------------------------------------------

function figure(url, caption, onClick) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url;
  img.alt = caption;
  img.className = "pixels";
  if (onClick) img.addEventListener("click", onClick);
  const text = document.createElement("figcaption");
  text.textContent = caption;
  fig.append(img, text);
  return fig;
}

function showResult(jobId, result, title) {
  Object.assign(state, { job: jobId, result, image: 0, token: null });
  $("result-title").textContent = title;
  const grid = $("images");
  grid.replaceChildren(...result.images.map((image, i) =>
    figure(image.url, image.label, () => chooseImage(i))));
  const slider = $("step");
  slider.max = Math.max(0, result.steps.length - 1);
  slider.value = slider.max;
  slider.disabled = result.steps.length === 0;
  $("rerun").disabled = result.steps.length === 0;
  drawTokens();
  chooseImage(0);
}

function chooseImage(i) {
  state.image = i;
  document.querySelectorAll("#images img").forEach((img, j) => img.classList.toggle("chosen", i === j));
  $("attention-base").src = state.result.images[i].url;
  $("attention-base").hidden = false;  // no empty image frame before the first result
  drawStep();
}

function drawStep() {
  const { result, job, image } = state;
  if (!result || result.steps.length === 0) {
    $("step-label").textContent = "this job kept no steps";
    return;
  }
  const k = Number($("step").value);
  $("xt").src = `/api/jobs/${job}/xt/${k}/${image}.png`;
  $("x0").src = `/api/jobs/${job}/x0/${k}/${image}.png`;
  $("xt").hidden = $("x0").hidden = false;
  $("step-label").textContent = `step ${k + 1} of ${result.steps.length} kept: t = ${result.steps[k]}` +
    ` (of ${state.info.timesteps}); image ${image + 1}, ${result.images[image].label}`;
  drawOverlay();
}

function drawTokens() {
  const box = $("tokens");
  const tokens = state.result.attention ? state.result.tokens : [];
  box.replaceChildren(...tokens.map((token, j) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = token.word;
    if (!token.known) {
      button.classList.add("unknown");
      button.title = "not in the vocabulary: read as <unk>";
    }
    button.addEventListener("click", () => { state.token = j; drawOverlay(); });
    return button;
  }));
  if (tokens.length === 0) box.textContent = "(no attention for this result: generate with a prompt)";
  $("attention-overlay").hidden = true;
  $("attention-label").textContent = "";
}

function drawOverlay() {
  const { result, job, image, token } = state;
  document.querySelectorAll("#tokens button").forEach((b, j) => b.classList.toggle("chosen", j === token));
  if (token === null || !result.attention) return;
  const all = $("all-steps").checked;
  const k = all ? "all" : $("step").value;
  const overlay = $("attention-overlay");
  overlay.src = `/api/jobs/${job}/attention/${image}/${token}/${k}.png`;
  overlay.hidden = false;
  $("attention-label").textContent = `"${result.tokens[token].word}"` +
    (result.tokens[token].known ? "" : " (unknown: <unk>)") +
    (all ? ", mean over all steps" : `, at t = ${result.steps[Number(k)]}`);
}

// ---- the panels ------------------------------------------------------------------------------

async function generate(event) {
  event.preventDefault();
  await guarded($("generate"), $("generate-status"), async () => {
    const body = settings();
    const [id, result] = await runJob("/api/generate", body, $("generate-status"));
    showResult(id, result, state.info.text
      ? `"${body.prompt}": seeds ${body.seed} to ${body.seed + body.n - 1}`
      : `seeds ${body.seed} to ${body.seed + body.n - 1}`);
  });
}

async function rerun() {
  const { job, image, result } = state;
  const k = Number($("step").value);
  await guarded($("rerun"), $("rerun-status"), async () => {
    const body = { job, image, step: k, seed: Number($("rerun-seed").value), n: Number($("rerun-n").value) };
    const [id, variations] = await runJob("/api/rerun", body, $("rerun-status"));
    showResult(id, variations, `variations of image ${image + 1} (${result.images[image].label}) ` +
      `from t = ${result.steps[k]}, new seeds ${body.seed} to ${body.seed + body.n - 1}`);
  });
}

async function sdedit() {
  const file = $("upload").files[0];
  await guarded($("sdedit"), $("rerun-status"), async () => {
    if (!file) throw new Error("choose an image file first");
    const limit = Math.floor(state.info.limits.max_body * 3 / 4) - 1000;   // base64 is 4/3 larger
    if (file.size > limit) throw new Error(`${file.name}: ${file.size} bytes; at most ${limit}`);
    const data = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("the file could not be read"));
      reader.readAsDataURL(file);
    });
    const body = { ...settings(), image: data, strength: Number($("strength").value) };
    const [id, result] = await runJob("/api/sdedit", body, $("rerun-status"));
    showResult(id, result, `${file.name} at strength ${body.strength}`);
  });
}

async function sweep() {
  await guarded($("sweep"), $("sweep-status"), async () => {
    const body = { ...settings(), n: 1 };
    const [, result] = await runJob("/api/sweep", body, $("sweep-status"));
    $("sweep-images").replaceChildren(...result.images.map((image) => figure(image.url, image.label)));
  });
}

async function similarity() {
  await guarded($("clip-go"), $("clip-note"), async () => {
    const data = await post("/api/similarity", { text: $("clip-text").value });
    const best = Math.max(...data.images.map((image) => image.similarity));
    const ranked = [...data.images].sort((a, b) => b.similarity - a.similarity);   // best first
    $("clip-results").replaceChildren(...ranked.map((image) => {
      const fig = figure(image.url, `${image.similarity.toFixed(3)}: ${image.caption}`);
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${Math.max(0, image.similarity / best) * 100}%`;
      fig.insertBefore(bar, fig.lastChild);
      return fig;
    }));
    showStatus($("clip-note"), data.unknown.length
      ? `not in the vocabulary (read as <unk>): ${data.unknown.join(", ")}` : "");
  });
}

async function start() {
  const response = await fetch("/api/info");
  const info = state.info = await response.json();
  $("model").textContent = `${info.checkpoint}: ${info.kind}, ${info.size}x${info.size} images, ` +
    `${info.step} training steps, T = ${info.timesteps}. At most ${info.limits.max_images} images ` +
    `and ${info.limits.max_steps} steps per request.`;
  if (info.words.length) {
    $("words").textContent = `${info.words.length} words: ${info.words.join(", ")}`;
    $("words-box").hidden = false;
  }
  $("sampler").replaceChildren(...info.samplers.map((name) => new Option(name, name)));
  for (const [name, value] of Object.entries(info.defaults)) {
    if ($(name) && name !== "prompt") $(name).value = value;
  }
  $("n").max = $("rerun-n").max = info.limits.max_images;
  $("steps").max = Math.min(info.limits.max_steps, info.timesteps);
  if (!info.text) document.querySelectorAll(".text-only").forEach((e) => { e.hidden = true; });
  if (info.text && !info.clip) {
    $("clip-note").textContent = info.clip_note;
    $("clip-go").disabled = true;
  }
  $("settings").addEventListener("submit", generate);
  $("step").addEventListener("input", drawStep);
  $("all-steps").addEventListener("change", drawOverlay);
  $("rerun").addEventListener("click", rerun);
  $("sdedit").addEventListener("click", sdedit);
  $("sweep").addEventListener("click", sweep);
  $("clip-go").addEventListener("click", similarity);
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  document.body.dataset.ready = "yes";
}

start();
