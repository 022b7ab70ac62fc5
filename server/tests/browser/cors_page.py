"""A page on another origin calls partseal-server from headless Chromium.

Serves, on 127.0.0.1:PAGE_PORT, a page whose script runs a KooDrive upload
with fetch(): create, PUT of the part to its upload URL, complete, detail,
GET of the download URL. Chromium (through Selenium and the ChromeDriver
given) loads the page; the script's outcome, a JSON object, is printed on
stdout as one line: {"ok": true, ...} or {"ok": false, "error": "..."}.

usage: cors_page.py PAGE_PORT SERVER_URL USER_ID TOKEN CHROMEDRIVER
"""

import http.server
import json
import os
import shutil
import sys
import tempfile
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>partseal CORS</title></head>
<body><pre id="result"></pre>
<script>
const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const xdate = () => new Date().toISOString().replace(/[-:]/g, "").replace(/\\.\\d+Z$/, "Z");
async function koo(path, body) {
  const r = await fetch(cfg.server + "/koodrive/ose/v1/" + path, {
    method: "POST",
    headers: {"Authorization": "Bearer " + cfg.token, "X-User-Id": cfg.user,
              "X-Date": xdate(), "Content-Type": "application/json",
              "X-Request-Id": "browser-" + path.replace(/\\W/g, "-")},
    body: JSON.stringify(body)});
  const v = await r.json();
  if (r.status !== 200) throw new Error(path + " answered " + r.status + ": " + JSON.stringify(v));
  return [v, r.headers.get("X-Request-Id")];
}
async function digest(bytes) {
  const d = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, "0")).join("");
}
async function run() {
  const bytes = new TextEncoder().encode("bytes a browser uploaded to partseal");
  const [created, createId] = await koo("files/create", {fileName: "b.txt", fileType: "45",
      length: bytes.length, uploadMode: "multipart",
      multiParts: [{partNumber: 1, partSize: bytes.length}]});
  const put = await fetch(created.multiParts[0].uploadUrl, {method: "PUT", body: bytes,
      headers: {"Content-Type": "application/octet-stream"}});
  if (put.status !== 200) throw new Error("PUT answered " + put.status);
  const etag = put.headers.get("ETag");
  const sha = await digest(bytes);
  const [done] = await koo("files/complete", {fileId: created.fileId, sha256: sha});
  const [detail] = await koo("files/" + created.fileId + "/detail", {});
  const got = await fetch(detail.downloadUrl, {headers: {"Range": "bytes=0-4"}});
  const text = await got.text();
  return {ok: true, create_request_id: createId, etag: etag, sha256: done.sha256,
          expected_sha256: sha, range_status: got.status,
          content_range: got.headers.get("Content-Range"), first_bytes: text};
}
run().then(r => r, e => ({ok: false, error: String(e)}))
  .then(r => { document.getElementById("result").textContent = JSON.stringify(r); });
</script></body></html>
"""


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    page_port, server, user, token, chromedriver = sys.argv[1:6]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", int(page_port)), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    os.environ["SE_OFFLINE"] = "true"
    profile = tempfile.mkdtemp(prefix="partseal-chromium-")
    opts = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync",
              "--user-data-dir=" + profile]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    try:
        cfg = json.dumps({"server": server, "user": user, "token": token})
        from urllib.parse import quote
        driver.get("http://127.0.0.1:%s/#%s" % (page_port, quote(cfg)))
        el = WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.ID, "result").text or None)
        print(el, flush=True)
    finally:
        driver.quit()
        httpd.shutdown()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
