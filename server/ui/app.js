// The upload page: signs in with a KooDrive user id and token (kept in
// sessionStorage), hashes a file in a worker from the moment it is chosen,
// and uploads it through the KooDrive API of the server that served this
// page, in the parallel chain mode:
//
//   files/create                 with part 1 (its hashCtx is the initial value)
//   files/multipart/uploadUrl    each further part with partOffset and hashCtx,
//                                as soon as the hash reaches it
//   PUT <uploadUrl>              at most MAX_IN_FLIGHT parts at once; part k
//                                only once part k+1 is registered (or k is
//                                the last), so the server checks its link on
//                                arrival and refuses a bad part at once
//   files/complete               with the file's SHA-256
//
// "Verified" is shown only when the server's answer to complete carries the
// digest this page computed.

const API = new URL("../koodrive/ose/v1/", location.href);
const MAX_IN_FLIGHT = 4;
const MAX_PARTS = 10000;
const MAX_ATTEMPTS = 6;
const STALL_MS = 60_000;
const REGISTER_BATCH = 100;
const DEFAULT_PART_SIZE = 8 << 20;
const FORBIDDEN_NAME = /[<>|:"*?/\\\u0000-\u001f\u007f]/g;
const MAX_NAME = 250;
const STORE = { user: "partseal.user", token: "partseal.token" };

const $ = (sel) => document.querySelector(sel);
const form = $("#upload-form");
const userInput = $("input[name=user]");
const tokenInput = $("input[name=token]");
const fileInput = $("input[type=file]");
const partSizeInput = $("#part-size");
const uploadButton = $("[data-action=upload]");
const result = $("#result");

// ---- formatting -----------------------------------------------------------

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const digits = Number.isInteger(v) ? 0 : v < 10 ? 2 : 1;
  return `${v.toFixed(digits)} ${units[u]}`;
}

function duration(s) {
  if (!Number.isFinite(s)) return "—";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

// ---- sign-in --------------------------------------------------------------

function loadCredentials() {
  userInput.value = sessionStorage.getItem(STORE.user) ?? "";
  tokenInput.value = sessionStorage.getItem(STORE.token) ?? "";
}

userInput.addEventListener("input", () => sessionStorage.setItem(STORE.user, userInput.value.trim()));
tokenInput.addEventListener("input", () => sessionStorage.setItem(STORE.token, tokenInput.value.trim()));
$("[data-action=forget]").addEventListener("click", () => {
  sessionStorage.removeItem(STORE.user);
  sessionStorage.removeItem(STORE.token);
  userInput.value = "";
  tokenInput.value = "";
  userInput.focus();
});

// ---- the form -------------------------------------------------------------

/** The part size typed, or an error message. */
function partSizeOf(text) {
  const t = text.trim().replace(/[\s_,]/g, "");
  if (!/^[0-9]+$/.test(t)) return { error: "The part size must be a whole number of bytes, e.g. 8388608 for 8 MiB." };
  const n = Number(t);
  if (!Number.isSafeInteger(n) || n <= 0 || n % 64 !== 0) {
    return { error: `The part size must be a positive multiple of 64 bytes; ${t} is not (8388608 is 8 MiB).` };
  }
  return { value: n };
}

function describeForm() {
  const hint = $("#part-size-hint");
  const p = partSizeOf(partSizeInput.value);
  const file = fileInput.files[0];
  partSizeInput.setAttribute("aria-invalid", p.error ? "true" : "false");
  hint.classList.toggle("bad", Boolean(p.error));
  if (p.error) {
    hint.textContent = p.error;
  } else {
    const parts = file ? Math.max(1, Math.ceil(file.size / p.value)) : null;
    hint.textContent = `${bytes(p.value)} per part; a multiple of 64 bytes.` +
      (parts ? ` This file: ${bytes(file.size)} in ${parts} part${parts === 1 ? "" : "s"}.` : "");
  }
}

partSizeInput.addEventListener("input", () => {
  describeForm();
  clearTimeout(rehash);
  // A size being typed is hashed once the typing pauses; a bad one stops
  // the hash at once.
  if (partSizeOf(partSizeInput.value).error) startHash();
  else rehash = setTimeout(startHash, 300);
});
fileInput.addEventListener("change", () => {
  describeForm();
  startHash();
});

function formError(msg) {
  const el = $("#form-error");
  el.textContent = msg ?? "";
  el.hidden = !msg;
}

function setBusy(busy) {
  for (const el of form.querySelectorAll("input, button")) el.disabled = busy;
}

// ---- the result -----------------------------------------------------------

function show(state, title, message = "") {
  result.dataset.state = state;
  $("#result-title").textContent = title;
  $("#result-message").textContent = message;
  if (state !== "verified") {
    $("#result-facts").hidden = true;
    delete result.dataset.sha256;
    delete result.dataset.fileId;
  }
}

function showVerified(name, sha256, fileId, length) {
  show("verified", "Verified", "The server holds exactly the bytes hashed here.");
  $("#result-name").textContent = name;
  result.dataset.sha256 = sha256;
  result.dataset.fileId = fileId;
  $("#result-sha256").textContent = sha256;
  $("#result-file-id").textContent = fileId;
  $("#result-size").textContent = `${bytes(length)} (${length.toLocaleString("en")} bytes)`;
  $("#result-facts").hidden = false;
}

// ---- talking to the server ------------------------------------------------

/** A refusal that retrying cannot mend: shown as it is. */
class Refused extends Error {}

/** Server clock minus ours, in ms, from the `Date` of the server's answers. */
let skewMs = 0;

function noteServerDate(resp, sentAt) {
  const d = Date.parse(resp.headers.get("Date") ?? "");
  if (Number.isNaN(d)) return;
  // `Date` has whole seconds: its middle is the best guess.
  skewMs = d + 500 - (sentAt + Date.now()) / 2;
}

function xDate() {
  return new Date(Date.now() + skewMs).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function backoff(attempt, retryAfter) {
  const s = Number(retryAfter);
  if (Number.isFinite(s) && s > 0) return Math.min(s, 60) * 1000;
  return Math.min(500 * 2 ** (attempt - 1), 15_000) * (0.75 + Math.random() / 2);
}

/** The server's message in an error body (KooDrive `{code, msg}`). */
function reason(text, status) {
  try {
    const v = JSON.parse(text);
    if (v && typeof v.msg === "string") return v.code !== undefined ? `${v.msg} (code ${v.code})` : v.msg;
  } catch {
    // not JSON
  }
  const t = (text ?? "").trim().slice(0, 300);
  return t ? `${t} (HTTP ${status})` : `HTTP ${status}`;
}

async function syncClock() {
  const sentAt = Date.now();
  try {
    const resp = await fetch("./", { method: "HEAD", cache: "no-store" });
    noteServerDate(resp, sentAt);
  } catch {
    // The first API call will say what is wrong.
  }
}

/** A KooDrive call; retried on network errors and 5xx, never on 4xx. */
async function api(path, body, creds, what) {
  let dateRetried = false;
  for (let attempt = 1; ; attempt++) {
    const sentAt = Date.now();
    let resp;
    let text;
    try {
      resp = await fetch(new URL(path, API), {
        method: "POST",
        cache: "no-store",
        headers: {
          "Content-Type": "application/json",
          Authorization: `Bearer ${creds.token}`,
          "X-User-Id": creds.user,
          "X-Date": xDate(),
        },
        body: JSON.stringify(body),
      });
      text = await resp.text();
    } catch (e) {
      if (attempt >= MAX_ATTEMPTS) {
        throw new Error(`${what}: the server could not be reached (${e.message}) after ${attempt} attempts.`);
      }
      await sleep(backoff(attempt));
      continue;
    }
    noteServerDate(resp, sentAt);
    let v = null;
    try {
      v = JSON.parse(text);
    } catch {
      // judged below
    }
    if (resp.ok && v && v.code === 0) return v;
    // X-Date refused: the skew is now known from this answer; once more.
    if (resp.status === 401 && v && v.code === 13000002 && !dateRetried) {
      dateRetried = true;
      attempt--;
      continue;
    }
    if (resp.status >= 500 && attempt < MAX_ATTEMPTS) {
      await sleep(backoff(attempt, resp.headers.get("Retry-After")));
      continue;
    }
    throw new Refused(`${what}: ${reason(text, resp.status)}`);
  }
}

// ---- hashing ---------------------------------------------------------------

/**
 * The hash of one file in parts of one size, run by the worker as soon as
 * the file is chosen. Its messages are kept, so an upload started later
 * catches up on them, and passed on to `sink` (the upload) once there is one.
 */
class Hash {
  constructor(file, partSize) {
    this.file = file;
    this.partSize = partSize;
    this.parts = [];
    this.hashed = 0;
    this.sha256 = null;
    this.error = null;
    this.sink = null;
    this.worker = new Worker("hash-worker.js");
    this.worker.onmessage = (e) => this.on(e.data);
    this.worker.onerror = (e) => this.on({ type: "error", message: e.message || "the worker failed" });
    this.worker.postMessage({ file, partSize });
  }

  on(m) {
    if (this.worker === null) return; // stopped
    if (m.type === "part") this.parts.push(m);
    else if (m.type === "progress") this.hashed = m.hashed;
    else if (m.type === "done") {
      this.hashed = m.length;
      this.sha256 = m.sha256;
      this.stop();
    } else if (m.type === "error") {
      this.error = m.message;
      this.stop();
    }
    if (this.sink) this.sink(m);
    else showHash(this);
  }

  stop() {
    if (this.worker) this.worker.terminate();
    this.worker = null;
  }

  /** Whether it is (or will be) the whole hash of `file` in `partSize` parts. */
  serves(file, partSize) {
    return this.file === file && this.partSize === partSize && this.error === null &&
      (this.worker !== null || this.sha256 !== null);
  }
}

let hash = null;
let rehash = null;
let uploading = false;

/** Hashes the chosen file at once, before Upload is pressed. */
function startHash() {
  if (uploading) return;
  const file = fileInput.files[0];
  const size = partSizeOf(partSizeInput.value);
  if (hash && file && !size.error && hash.serves(file, size.value)) return;
  if (hash) hash.stop();
  hash = null;
  $("#parts").replaceChildren();
  if (!file || size.error) {
    $("#progress").hidden = true;
    show("idle", "Nothing uploaded yet.");
    return;
  }
  hash = new Hash(file, size.value);
  $("#upload-bar").value = 0;
  $("#upload-text").textContent = `0 B of ${bytes(file.size)}`;
  $("#rate-text").textContent = "Press Upload to send it.";
  $("#parts-text").textContent = "";
  $("#progress").hidden = false;
  showHash(hash);
}

/** The hash bar. */
function drawHash(h) {
  const total = h.file.size;
  $("#hash-bar").value = total === 0 ? (h.sha256 ? 1 : 0) : h.hashed / total;
  $("#hash-text").textContent = `${bytes(h.hashed)} of ${bytes(total)}`;
}

/** The hash bar and the result line, while no upload is running. */
function showHash(h) {
  const total = h.file.size;
  drawHash(h);
  if (h.error) show("failed", "Hashing failed", h.error);
  else if (h.sha256) show("idle", "Hashed, ready to upload.", `SHA-256 ${h.sha256}`);
  else show("hashing", "Hashing…", `${h.file.name} · ${bytes(total)}`);
}

// ---- one upload -----------------------------------------------------------

class Upload {
  constructor(hash, creds) {
    this.hash = hash;
    this.file = hash.file;
    const partSize = hash.partSize;
    this.partSize = partSize;
    this.creds = creds;
    this.total = this.file.size;
    this.count = Math.max(1, Math.ceil(this.total / partSize));
    this.parts = new Map(); // number -> part
    this.toRegister = [];
    this.registering = false;
    this.fileId = null;
    this.sha256 = null;
    this.inFlight = new Set();
    this.stored = 0; // bytes of parts stored
    this.storedParts = 0;
    this.samples = [];
    this.failed = false;
    this.rendering = false;
    this.next = 1; // the next part to send: parts become ready in order
    this.rows = new Set(); // parts with a progress row
  }

  run() {
    return new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      // What the hash found before Upload was pressed, then the rest as
      // it comes.
      const h = this.hash;
      h.sink = (m) => this.onWorker(m);
      for (const p of h.parts) this.onWorker(p);
      if (h.sha256 !== null) this.onWorker({ type: "done", sha256: h.sha256, length: h.hashed });
      if (h.error !== null) this.onWorker({ type: "error", message: h.error });
    });
  }

  onWorker(m) {
    if (this.failed) return;
    if (m.type === "part") {
      const p = { ...m, url: null, loaded: 0, state: "waiting", xhr: null, row: null };
      this.parts.set(p.partNumber, p);
      if (p.partNumber === 1) {
        this.create(p).catch((e) => this.fail(e));
      } else {
        this.toRegister.push(p);
        this.register();
      }
    } else if (m.type === "progress") {
      this.render();
    } else if (m.type === "done") {
      this.sha256 = m.sha256;
      this.render();
      this.maybeComplete();
    } else if (m.type === "error") {
      this.fail(new Error(`Hashing failed: ${m.message}`));
    }
  }

  info(p) {
    return { partNumber: p.partNumber, partSize: p.partSize, partOffset: p.partOffset, hashCtx: p.hashCtx };
  }

  /** The upload URL, on the origin of this page (which served it). */
  sameOrigin(url) {
    const u = new URL(url, location.href);
    return new URL(u.pathname + u.search, location.href).href;
  }

  async create(p1) {
    let name = (this.file.name || "upload.bin").replace(FORBIDDEN_NAME, "_").trim();
    if (name === "" || name === "." || name === "..") name = "upload.bin";
    name = Array.from(name).slice(0, MAX_NAME).join("");
    const body = {
      fileName: name,
      fileType: "45",
      length: this.total,
      uploadMode: "multipart",
      multiParts: [this.info(p1)],
    };
    if (this.file.type && this.file.type.length <= 128) body.mimeType = this.file.type;
    const v = await api("files/create", body, this.creds, "Creating the upload");
    if (this.failed) return;
    this.fileId = v.fileId;
    this.urls(v.multiParts);
    this.register();
  }

  urls(multiParts) {
    for (const m of multiParts ?? []) {
      const p = this.parts.get(m.partNumber);
      if (p && typeof m.uploadUrl === "string") {
        p.url = this.sameOrigin(m.uploadUrl);
        if (p.state === "waiting") p.state = "registered";
      }
    }
    this.schedule();
  }

  /** Registers the parts the hash has reached, one call at a time. */
  register() {
    if (this.failed || this.registering || this.fileId === null || this.toRegister.length === 0) return;
    this.registering = true;
    const batch = this.toRegister.splice(0, REGISTER_BATCH);
    const first = batch[0].partNumber;
    const last = batch[batch.length - 1].partNumber;
    const what = first === last ? `Registering part ${first}` : `Registering parts ${first}–${last}`;
    api("files/multipart/uploadUrl", { fileId: this.fileId, multiParts: batch.map((p) => this.info(p)) },
      this.creds, what)
      .then((v) => {
        this.registering = false;
        if (this.failed) return;
        this.urls(v.multiParts);
        this.register();
      })
      .catch((e) => this.fail(e));
  }

  /** Part k may go once part k+1 is registered (or k is the last part). */
  ready(p) {
    if (p.state !== "registered") return false;
    if (p.partNumber === this.count) return true;
    const next = this.parts.get(p.partNumber + 1);
    return Boolean(next && next.url);
  }

  schedule() {
    if (this.failed) return;
    // Part k is ready once k and k+1 are registered, and registration goes
    // in order, so parts become ready in order too.
    while (this.next <= this.count && this.inFlight.size < MAX_IN_FLIGHT) {
      const p = this.parts.get(this.next);
      if (!p || !this.ready(p)) break;
      this.send(p);
      this.next++;
    }
    this.render();
  }

  send(p) {
    p.state = "sending";
    this.inFlight.add(p);
    if (result.dataset.state === "hashing") show("uploading", "Uploading…", "Parts are checked by the server as they arrive.");
    this.put(p)
      .then(() => {
        this.inFlight.delete(p);
        p.state = "stored";
        this.stored += p.partSize;
        this.storedParts++;
        p.loaded = p.partSize;
        this.schedule();
        this.maybeComplete();
      })
      .catch((e) => {
        this.inFlight.delete(p);
        this.fail(e);
      });
  }

  /** PUTs one part, retrying network errors, stalls and 5xx with backoff. */
  async put(p) {
    for (let attempt = 1; ; attempt++) {
      let r;
      try {
        r = await this.putOnce(p);
      } catch (e) {
        if (this.failed) throw e;
        if (attempt >= MAX_ATTEMPTS) {
          throw new Error(`Part ${p.partNumber} could not be sent (${e.message}) after ${attempt} attempts.`);
        }
        p.loaded = 0;
        await sleep(backoff(attempt));
        continue;
      }
      if (r.status >= 200 && r.status < 300) return;
      if (r.status >= 500 && attempt < MAX_ATTEMPTS) {
        p.loaded = 0;
        await sleep(backoff(attempt, r.retryAfter));
        continue;
      }
      throw new Refused(`Part ${p.partNumber} was refused: ${reason(r.text, r.status)}`);
    }
  }

  putOnce(p) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      p.xhr = xhr;
      let lastProgress = Date.now();
      const watchdog = setInterval(() => {
        if (Date.now() - lastProgress > STALL_MS) xhr.abort();
      }, 5000);
      const done = () => {
        clearInterval(watchdog);
        p.xhr = null;
      };
      xhr.open("PUT", p.url);
      xhr.upload.onprogress = (e) => {
        lastProgress = Date.now();
        p.loaded = e.loaded;
        this.render();
      };
      xhr.onload = () => {
        done();
        resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader("Retry-After") });
      };
      xhr.onerror = () => {
        done();
        reject(new Error("network error"));
      };
      xhr.onabort = () => {
        done();
        reject(new Error(this.failed ? "stopped" : `no progress for ${STALL_MS / 1000} s`));
      };
      xhr.send(this.file.slice(p.partOffset, p.partOffset + p.partSize));
    });
  }

  maybeComplete() {
    if (this.failed || this.completing || this.sha256 === null || this.storedParts < this.count) return;
    this.completing = true;
    this.render();
    show("uploading", "Completing…", "The server checks the whole file's SHA-256.");
    api("files/complete", { fileId: this.fileId, sha256: this.sha256 }, this.creds, "Completing the upload")
      .then((v) => {
        if (v.sha256 === this.sha256 && v.fileId === this.fileId) {
          showVerified(this.file.name, this.sha256, this.fileId, Number(v.length ?? this.total));
          this.resolve();
        } else {
          throw new Refused(`The server answered the digest ${v.sha256}, not ${this.sha256}: not verified.`);
        }
      })
      .catch((e) => this.fail(e));
  }

  fail(e) {
    if (this.failed) return;
    this.failed = true;
    this.hash.stop();
    for (const p of this.inFlight) if (p.xhr) p.xhr.abort();
    // The upload cannot go on from this page: let the server drop its parts.
    if (this.fileId !== null) {
      api("files/multipart/abort", { fileId: this.fileId }, this.creds, "Aborting").catch(() => {});
    }
    this.render();
    this.reject(e);
  }

  // ---- progress -----------------------------------------------------------

  render() {
    if (this.rendering) return;
    this.rendering = true;
    requestAnimationFrame(() => {
      this.rendering = false;
      this.draw();
    });
  }

  draw() {
    const total = this.total;
    drawHash(this.hash);
    let sent = this.stored;
    for (const p of this.inFlight) sent += p.loaded;
    $("#upload-bar").value = total === 0 ? (this.storedParts ? 1 : 0) : sent / total;
    $("#upload-text").textContent = `${bytes(sent)} of ${bytes(total)}`;

    const now = performance.now();
    this.samples.push([now, sent]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
    const [t0, b0] = this.samples[0];
    const rate = now - t0 > 250 ? ((sent - b0) * 1000) / (now - t0) : NaN;
    let rateText;
    if (this.completing) rateText = "All parts stored.";
    else if (this.failed) rateText = "Stopped.";
    else if (Number.isFinite(rate) && rate > 0) rateText = `${bytes(rate)}/s · ${duration((total - sent) / rate)} left`;
    else rateText = "Measuring speed…";
    $("#rate-text").textContent = rateText;

    const list = $("#parts");
    const showing = new Set(this.failed || this.completing ? [] : this.inFlight);
    for (const p of this.rows) {
      if (!showing.has(p)) {
        p.row.remove();
        p.row = null;
        this.rows.delete(p);
      }
    }
    for (const p of [...showing].sort((a, b) => a.partNumber - b.partNumber)) {
      if (!p.row) {
        p.row = document.createElement("li");
        p.row.innerHTML = '<div class="meter-label"><span></span><span></span></div><progress max="1" value="0"></progress>';
        const after = [...list.children].find((li) => Number(li.dataset.part) > p.partNumber);
        p.row.dataset.part = p.partNumber;
        list.insertBefore(p.row, after ?? null);
        this.rows.add(p);
      }
      const [name, amount] = p.row.querySelectorAll("span");
      name.textContent = `Part ${p.partNumber}`;
      amount.textContent = `${bytes(p.loaded)} of ${bytes(p.partSize)}`;
      p.row.querySelector("progress").value = p.partSize === 0 ? 0 : p.loaded / p.partSize;
    }
    $("#parts-text").textContent =
      `${this.storedParts} of ${this.count} part${this.count === 1 ? "" : "s"} stored and checked` +
      ` · up to ${MAX_IN_FLIGHT} at once · ${bytes(this.partSize)} each`;
  }
}

// ---- start ----------------------------------------------------------------

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  formError(null);
  const creds = { user: userInput.value.trim(), token: tokenInput.value.trim() };
  const file = fileInput.files[0];
  const size = partSizeOf(partSizeInput.value);
  if (!creds.user || !creds.token) return formError("Enter your user id and token first.");
  if (!file) return formError("Choose a file to upload.");
  if (size.error) return formError(size.error);
  const count = Math.max(1, Math.ceil(file.size / size.value));
  if (count > MAX_PARTS) {
    return formError(`That is ${count} parts; at most ${MAX_PARTS} are allowed. ` +
      `Choose a part size of at least ${Math.ceil(file.size / MAX_PARTS / 64) * 64} bytes.`);
  }
  sessionStorage.setItem(STORE.user, creds.user);
  sessionStorage.setItem(STORE.token, creds.token);

  // The hash under way since the file was chosen, or a new one; a rehash
  // still due from typing must not replace this upload's result later.
  clearTimeout(rehash);
  if (!hash || !hash.serves(file, size.value)) {
    if (hash) hash.stop();
    hash = new Hash(file, size.value);
  }
  const h = hash;
  uploading = true;
  setBusy(true);
  $("#parts").replaceChildren();
  $("#progress").hidden = false;
  if (h.sha256 === null) show("hashing", "Hashing…", `${file.name} · ${bytes(file.size)}`);
  else show("uploading", "Uploading…", "Parts are checked by the server as they arrive.");
  h.sink = () => {}; // the upload takes over from here
  $("#progress").scrollIntoView({ block: "start" });
  try {
    await syncClock();
    await new Upload(h, creds).run();
  } catch (err) {
    show("failed", "Upload failed", err.message);
  } finally {
    h.sink = null;
    // A hash cut short is of no use to the next upload.
    if (!h.serves(file, size.value)) hash = null;
    uploading = false;
    setBusy(false);
    result.scrollIntoView({ block: "nearest" });
  }
});

loadCredentials();
if (!partSizeInput.value) partSizeInput.value = String(DEFAULT_PART_SIZE);
describeForm();
// A file kept by the browser across a reload is hashed at once too.
startHash();
