// The hash worker of the upload page: reads a file front to back in slices
// (never the whole file in memory), feeds it to hash-wasm's SHA-256 and
// reports, for each part, the SHA-256 midstate of all bytes before it (the
// part's KooDrive `hashCtx`), then the file's SHA-256.
//
// In:  {file: Blob, partSize: number}   (partSize a positive multiple of 64)
// Out: {type: "part", partNumber, partOffset, partSize, hashCtx: [8 words]}
//      {type: "progress", hashed}       (bytes hashed so far)
//      {type: "done", sha256, length}   (lower-case hex)
//      {type: "error", message}
//
// Part k is announced as soon as the hash reaches its first byte, so the
// page can register it while later bytes are still being hashed. The parts
// are those `partseal ctx` prints: consecutive, `partSize` bytes each but
// the last, and an empty file is one empty part.
"use strict";

importScripts("hash-wasm-sha256.js");

const BLOCK = 64;
const READ = 4 << 20;
const INITIAL = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
// Offsets in the state hash-wasm 4.13.0's save() returns (a 4-byte build
// prefix, then its C `struct sha256_ctx`): the byte count, a little-endian
// uint64, and the eight state words, little-endian uint32. Internal to that
// build: midstate() checks them every time it reads them.
const STATE_LENGTH_AT = 4 + 64;
const STATE_WORDS_AT = 4 + 72;

/** The state words after `expected` bytes, read out of hash-wasm's state. */
function midstate(hasher, expected) {
  const s = hasher.save();
  if (s.length < STATE_WORDS_AT + 32) {
    throw new Error(`unexpected hash-wasm state (${s.length} bytes)`);
  }
  const view = new DataView(s.buffer, s.byteOffset, s.byteLength);
  const length = view.getBigUint64(STATE_LENGTH_AT, true);
  if (length !== BigInt(expected)) {
    throw new Error(
      `unexpected hash-wasm state layout (byte count ${length}, expected ${expected})`);
  }
  const words = [];
  for (let i = 0; i < 8; i++) words.push(view.getUint32(STATE_WORDS_AT + 4 * i, true));
  return words;
}

async function hashFile(file, partSize) {
  if (!Number.isSafeInteger(partSize) || partSize <= 0 || partSize % BLOCK !== 0) {
    throw new Error(`the part size must be a positive multiple of ${BLOCK} bytes`);
  }
  const hasher = await self.hashwasm.createSHA256();
  hasher.init();
  const initial = midstate(hasher, 0);
  if (initial.some((w, i) => w !== INITIAL[i])) {
    throw new Error("unexpected hash-wasm state layout (initial value)");
  }
  const total = file.size;
  const announce = (offset, ctx) => {
    self.postMessage({
      type: "part",
      partNumber: offset / partSize + 1,
      partOffset: offset,
      partSize: Math.min(partSize, total - offset),
      hashCtx: ctx,
    });
  };
  announce(0, initial);
  // Reads end at part boundaries, so each boundary falls between two
  // updates, where hash-wasm has folded every whole block. The next slice
  // is read while the current one is hashed.
  const sliceEnd = (at) => Math.min(total, at + READ, (Math.floor(at / partSize) + 1) * partSize);
  const read = (at) => file.slice(at, sliceEnd(at)).arrayBuffer();
  let at = 0;
  let next = total > 0 ? read(0) : null;
  let lastReport = 0;
  while (at < total) {
    const buf = new Uint8Array(await next);
    if (buf.length === 0) throw new Error("the file became shorter while it was read");
    const end = at + buf.length;
    next = end < total ? read(end) : null;
    hasher.update(buf);
    at = end;
    if (at < total && at % partSize === 0) announce(at, midstate(hasher, at));
    const now = Date.now();
    if (now - lastReport > 100 || at === total) {
      lastReport = now;
      self.postMessage({ type: "progress", hashed: at });
    }
  }
  self.postMessage({ type: "done", sha256: hasher.digest("hex"), length: total });
}

self.onmessage = (e) => {
  const { file, partSize } = e.data;
  hashFile(file, partSize).catch((err) => {
    self.postMessage({ type: "error", message: String(err && err.message ? err.message : err) });
  });
};
