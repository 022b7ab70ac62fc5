"""Drives the upload page of a running partseal-server in headless Chromium.

    python upload_page.py JOB.json

JOB is a JSON object; its "mode" says what to do, and the answer is one JSON
object on stdout (diagnostics go to stderr):

- "upload": sign in with "user" and "token", choose "file", press Upload
  and wait for the result. Answers the result element's data-state,
  data-sha256 and data-file-id, its text, the severe browser log entries,
  and, when "screenshots" names a directory, saves ui-STATE.png (1280x800)
  and ui-STATE-phone.png (390 px wide, the whole page) there.
  With "faults", the page's part uploads are tampered with before the
  click, as a bad network would: {"networkErrorOnce": N} sends the first
  PUT of part N nowhere (a network error), {"corrupt": N} rotates the bytes
  of every PUT of part N by one, {"clockOffsetSecs": S} puts the page's
  clock S seconds off; the answer's "faults" then says which requests were
  tampered with. "partSize" is typed into the part size field first. The
  answer's "trace" lists, in order, the parts each registration call
  (files/create, files/multipart/uploadUrl) got URLs for and each part
  PUT started, and the most PUTs that were in flight at once.
- "part-size": choose "file", and for each of "partSizes" type it into the
  part size field and press Upload; answers, for each, the field's hint,
  the form's error and the result's data-state.
- "midstates": load the page, choose "file", and run the page's own hash
  worker on prefixes of it: for each of "cases" ({"length", "partSize"})
  the parts it announces (number, offset, size, hashCtx) and the SHA-256.

Needs Selenium, Chromium and ChromeDriver (PARTSEAL_CHROMEDRIVER, default
/usr/bin/chromedriver); works offline.
"""

import base64
import json
import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
    "--hide-scrollbars",
]
FINAL_STATES = ("verified", "failed")


def log(*args):
    print("upload_page.py:", *args, file=sys.stderr, flush=True)


def browser(profile):
    os.environ.setdefault("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(candidate):
            opts.binary_location = candidate
            break
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("PARTSEAL_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_script_timeout(300)
    return driver


def open_page(driver, url):
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def severe_logs(driver):
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver, path, width, height, mobile, whole):
    """A PNG of the page laid out at this viewport size: the viewport with
    the result in it, or the whole page."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    if whole:
        full = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": max(full, height), "scale": 1}})
    else:
        # The file card, the progress and the result, as much as fits.
        driver.execute_script("""
            const top = document.getElementById('file-title').closest('section').getBoundingClientRect().top;
            const bottom = document.getElementById('result').getBoundingClientRect().bottom;
            if (bottom - top + 32 <= innerHeight) window.scrollBy(0, top - 16);
            else document.getElementById('result').scrollIntoView({block: 'end'});
        """)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


INSTRUMENT_JS = """
const faults = arguments[0];
const done = { failed: [], corrupted: [] };
window.partsealFaults = done;
if (faults.clockOffsetSecs) {
  const now = Date.now;
  Date.now = () => now() + faults.clockOffsetSecs * 1000;
}
const open = XMLHttpRequest.prototype.open;
const send = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.open = function (method, url, ...rest) {
  const m = /\\/upload\\/koodrive\\/[0-9a-f]+\\/([0-9]+)/.exec(String(url));
  this.partNumber = m ? Number(m[1]) : null;
  if (method === "PUT" && this.partNumber === faults.networkErrorOnce && !done.failed.includes(this.partNumber)) {
    done.failed.push(this.partNumber);
    return open.call(this, method, "http://127.0.0.1:9/", ...rest);
  }
  return open.call(this, method, url, ...rest);
};
XMLHttpRequest.prototype.send = function (body) {
  if (this.partNumber === faults.corrupt && body instanceof Blob && body.size > 1) {
    done.corrupted.push(this.partNumber);
    body = new Blob([body.slice(1), body.slice(0, 1)]);
  }
  if (this.partNumber !== null) {
    trace.events.push({ put: this.partNumber });
    trace.inFlight++;
    trace.maxInFlight = Math.max(trace.maxInFlight, trace.inFlight);
    this.addEventListener("loadend", () => trace.inFlight--);
  }
  return send.call(this, body);
};
// Registrations, as their answers arrive (before the page sees them).
const trace = { events: [], inFlight: 0, maxInFlight: 0 };
window.partsealTrace = trace;
const fetch0 = window.fetch;
window.fetch = async (...args) => {
  const resp = await fetch0(...args);
  const url = String(args[0]);
  if (/files\\/(create|multipart\\/uploadUrl)$/.test(url) && resp.ok) {
    const v = await resp.clone().json();
    if (v.code === 0) trace.events.push({ registered: (v.multiParts || []).map((p) => p.partNumber) });
  }
  return resp;
};
"""


def upload(driver, job):
    open_page(driver, job["url"])
    driver.execute_script(INSTRUMENT_JS, job.get("faults", {}))
    user = driver.find_element(By.CSS_SELECTOR, "input[name=user]")
    token = driver.find_element(By.CSS_SELECTOR, "input[name=token]")
    user.clear()
    user.send_keys(job["user"])
    token.clear()
    token.send_keys(job["token"])
    driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(job["file"])
    if "partSize" in job:
        set_part_size(driver, job["partSize"])
    result = driver.find_element(By.ID, "result")
    # Choosing the file starts the hash.
    before = result.get_attribute("data-state")
    assert before in ("idle", "hashing"), before
    started = time.monotonic()
    driver.find_element(By.CSS_SELECTOR, "[data-action=upload]").click()
    seen = {before}

    def finished(_):
        state = result.get_attribute("data-state")
        seen.add(state)
        return state in FINAL_STATES

    WebDriverWait(driver, job.get("timeout", 240), poll_frequency=0.05).until(finished)
    secs = time.monotonic() - started
    state = result.get_attribute("data-state")
    size = os.path.getsize(job["file"])
    log(f"{state} after {secs:.2f} s ({size / secs / 2**20:.1f} MiB/s end to end, {size} bytes)")
    out = {
        "state": state,
        "states_seen": sorted(seen),
        "sha256": result.get_attribute("data-sha256"),
        "fileId": result.get_attribute("data-file-id"),
        "title": driver.find_element(By.ID, "result-title").text,
        "message": driver.find_element(By.ID, "result-message").text,
        "text": result.text,
        "severe_logs": severe_logs(driver),
        "seconds": secs,
        "faults": driver.execute_script("return window.partsealFaults"),
        "trace": driver.execute_script("return window.partsealTrace"),
        "session_storage": driver.execute_script(
            "return {user: sessionStorage.getItem('partseal.user'),"
            " token: sessionStorage.getItem('partseal.token')}"),
        "local_storage_keys": driver.execute_script("return localStorage.length"),
    }
    shots = job.get("screenshots")
    if shots:
        os.makedirs(shots, exist_ok=True)
        screenshot(driver, os.path.join(shots, f"ui-{state}.png"), 1280, 800, False, False)
        screenshot(driver, os.path.join(shots, f"ui-{state}-phone.png"), 390, 844, True, True)
    return out


def set_part_size(driver, value):
    field = driver.find_element(By.ID, "part-size")
    field.clear()
    field.send_keys(str(value))


def part_size(driver, job):
    open_page(driver, job["url"])
    driver.find_element(By.CSS_SELECTOR, "input[name=user]").send_keys("someone")
    driver.find_element(By.CSS_SELECTOR, "input[name=token]").send_keys("some-token-0123456789")
    driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(job["file"])
    error = driver.find_element(By.ID, "form-error")
    out = []
    for value in job["partSizes"]:
        set_part_size(driver, value)
        driver.find_element(By.CSS_SELECTOR, "[data-action=upload]").click()
        WebDriverWait(driver, 10).until(lambda _: error.is_displayed())
        out.append({
            "hint": driver.find_element(By.ID, "part-size-hint").text,
            "error": error.text,
            "invalid": driver.find_element(By.ID, "part-size").get_attribute("aria-invalid"),
            "state": driver.find_element(By.ID, "result").get_attribute("data-state"),
        })
    return {"results": out}


MIDSTATES_JS = """
const cases = arguments[0];
const done = arguments[arguments.length - 1];
const file = document.querySelector("input[type=file]").files[0];
(async () => {
  const out = [];
  for (const c of cases) {
    const worker = new Worker("hash-worker.js");
    const started = performance.now();
    const r = await new Promise((resolve) => {
      const parts = [];
      worker.onmessage = (e) => {
        const m = e.data;
        if (m.type === "part") parts.push(m);
        else if (m.type === "done") resolve({ parts, sha256: m.sha256, length: m.length });
        else if (m.type === "error") resolve({ error: m.message });
      };
      worker.onerror = (e) => resolve({ error: String(e.message) });
      worker.postMessage({ file: file.slice(0, c.length), partSize: c.partSize });
    });
    r.ms = performance.now() - started;
    worker.terminate();
    out.push(r);
  }
  return out;
})().then(done, (e) => done([{ error: String(e) }]));
"""


def midstates(driver, job):
    open_page(driver, job["url"])
    driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(job["file"])
    results = driver.execute_async_script(MIDSTATES_JS, job["cases"])
    for c, r in zip(job["cases"], results):
        if "ms" in r and c["length"] >= 1 << 20:
            log(f"hashed {c['length']} bytes in {r['ms']:.0f} ms ({c['length'] / r['ms'] * 1000 / 2**20:.0f} MiB/s)")
    return {"results": results, "severe_logs": severe_logs(driver)}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    profile = tempfile.mkdtemp(prefix="partseal-chromium-")
    driver = None
    try:
        driver = browser(profile)
        modes = {"upload": upload, "midstates": midstates, "part-size": part_size}
        out = modes[job["mode"]](driver, job)
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
