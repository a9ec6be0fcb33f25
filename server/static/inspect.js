// The inspection page: no build step, no dependencies. Every call goes through api(),
// which sends the API key the user typed (kept in sessionStorage, never in the URL).
const $ = (selector) => document.querySelector(selector);
const KEY_STORAGE = "sharp-serve-api-key";

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = $("#api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function showError(error) {
  $("#error").hidden = !error;
  $("#error").textContent = error ? String(error.message || error) : "";
}

function setStatus(text) {
  $("#status").textContent = text;
}

async function connect() {
  showError(null);
  sessionStorage.setItem(KEY_STORAGE, $("#api-key").value.trim());
  try {
    const models = await api("/v1/models");
    // The page sends its own `sharp` object, so it offers the bare served models.
    const bare = models.data.filter((m) => !m.id.includes(":") || m.id === m.root);
    $("#model").replaceChildren(...bare.map((m) => new Option(m.id, m.id)));
    await refreshFiles();
    setStatus("connected");
  } catch (error) {
    setStatus("not connected");
    showError(error);
  }
}

async function refreshFiles(selectId) {
  const files = await api("/v1/files");
  $("#file").replaceChildren(...files.data.map((f) => new Option(`${f.filename} (${f.id})`, f.id)));
  if (selectId) $("#file").value = selectId;
}

async function upload() {
  const file = $("#upload").files[0];
  if (!file) return;
  showError(null);
  setStatus(`uploading ${file.name}…`);
  try {
    const form = new FormData();
    form.append("file", file);
    form.append("purpose", "user_data");
    const stored = await api("/v1/files", { method: "POST", body: form });
    await refreshFiles(stored.id);
    document.querySelector('input[name="source"][value="file"]').checked = true;
    setStatus(`uploaded ${stored.id}`);
  } catch (error) {
    setStatus("upload failed");
    showError(error);
  }
}

function videoPart() {
  const source = document.querySelector('input[name="source"]:checked').value;
  if (source === "file") {
    const id = $("#file").value;
    if (!id) throw new Error("Upload or pick a video first");
    return { type: "file", file: { file_id: id } };
  }
  const url = $("#url").value.trim();
  if (!url) throw new Error("Give the video's URL");
  return { type: "video_url", video_url: { url } };
}

function mediaIoKwargs() {
  const frames = parseInt($("#num-frames").value, 10);
  return Number.isFinite(frames) ? { video: { num_frames: frames } } : undefined;
}

async function run(event) {
  event.preventDefault();
  showError(null);
  $("#results").replaceChildren();
  const methods = [...document.querySelectorAll('input[name="method"]:checked')].map((box) => box.value);
  try {
    if (!methods.length) throw new Error("Pick at least one method");
    const part = videoPart();
    const media = mediaIoKwargs();
    setStatus("decoding frames…");
    const frames = await api("/v1/inspect/frames", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ video: part, media_io_kwargs: media }),
    });
    const retention = parseFloat($("#retention").value);
    // One method after another: they share the engine, and the first fills its caches.
    for (const method of methods) {
      setStatus(`running ${method}…`);
      const response = await api("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model: $("#model").value,
          messages: [{ role: "user", content: [part, { type: "text", text: $("#question").value }] }],
          max_tokens: 32,
          temperature: 0,
          sharp: { method, retention, return_selection: true },
          media_io_kwargs: media,
        }),
      });
      $("#results").append(renderResult(method, response, frames));
    }
    setStatus("done");
    document.body.dataset.state = "done";
  } catch (error) {
    setStatus("failed");
    showError(error);
    document.body.dataset.state = "failed";
  }
}

function renderResult(method, response, frames) {
  const report = response.sharp;
  const section = element("section", { className: "result" });
  section.dataset.method = method;
  section.append(
    element("h2", { textContent: method }),
    element("p", { className: "answer", textContent: response.choices[0].message.content }),
    element("p", {
      className: "summary",
      textContent:
        `kept ${report.video_tokens_kept} of ${report.video_tokens} video tokens ` +
        `(${((100 * report.video_tokens_kept) / Math.max(1, report.video_tokens)).toFixed(1)}%), ` +
        `prompt ${response.usage.prompt_tokens} tokens, scoring ${report.scoring_ms.toFixed(1)} ms`,
    }),
  );
  const video = report.videos[0];
  if (video && video.selection) {
    section.append(renderTiles(video.selection, frames));
  } else {
    section.append(element("p", { textContent: "The server no longer holds this selection." }));
  }
  const details = element("details");
  details.append(
    element("summary", { textContent: "report" }),
    element("pre", { className: "report", textContent: JSON.stringify(report, null, 2) }),
  );
  section.append(details);
  return section;
}

// One tile per temporal group: its first frame, its kept patches outlined and its
// pruned ones dimmed. Token i is (group, row, column) = unravel(i, token_grid).
function renderTiles(selection, frames) {
  const [groups, rows, columns] = selection.token_grid;
  const perGroup = rows * columns;
  const kept = new Set(selection.kept_indices);
  const tiles = element("div", { className: "tiles" });
  for (let group = 0; group < groups; group++) {
    const first = group * selection.frames_per_group;
    const last = Math.min(first + selection.frames_per_group, selection.frame_timestamps.length) - 1;
    const frame = frames.data[Math.min(first, frames.data.length - 1)];
    const overlay = element("div", { className: "overlay" });
    overlay.style.gridTemplateColumns = `repeat(${columns}, 1fr)`;
    overlay.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
    let keptHere = 0;
    for (let offset = 0; offset < perGroup; offset++) {
      const index = group * perGroup + offset;
      const isKept = kept.has(index);
      keptHere += isKept;
      const cell = element("div", { className: `cell ${isKept ? "kept" : "pruned"}` });
      cell.dataset.index = index;
      overlay.append(cell);
    }
    const picture = element("div", { className: "frame" });
    picture.append(element("img", { src: frame.image, alt: `frame ${first}` }), overlay);
    const times = selection.frame_timestamps;
    const span = first === last ? `${times[first].toFixed(2)} s` : `${times[first].toFixed(2)}–${times[last].toFixed(2)} s`;
    const caption = element("div", { className: "caption" });
    const count = element("span", { className: "kept-count", textContent: String(keptHere) });
    caption.append(`${span} · kept `, count, ` / ${perGroup}`);
    const tile = element("div", { className: "tile" });
    tile.dataset.group = group;
    tile.append(picture, caption);
    tiles.append(tile);
  }
  return tiles;
}

function element(tag, properties = {}) {
  return Object.assign(document.createElement(tag), properties);
}

$("#api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
$("#connect").addEventListener("click", connect);
$("#upload").addEventListener("change", upload);
$("#query").addEventListener("submit", run);
connect();
