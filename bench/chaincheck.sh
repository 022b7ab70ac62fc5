#!/usr/bin/env bash
# The parallel chain check against the machine's SHA-256 limit: rounds
# alternate `openssl speed -evp sha256 -bytes 1048576` (one core) and
# `partseal verify --plan` of 1 GiB in 64 parts of 16 MiB (every core), and
# print the check's speed as a share of the two-core limit, 2x openssl's
# one-core speed measured in the same run.
#
# The parts are checked in two page-cache layouts, alternated in each round:
#   large  each part written with one 16 MiB write (as the server's part
#          writer or a download writes them): the page cache holds them in
#          large folios (2 MiB where the kernel and file system allow it);
#   small  the parts cut by split(1), whose small writes leave folios no
#          larger than a write (128 KiB with GNU split).
#
#   bench/chaincheck.sh            ROUNDS=5 by default; BENCH_DIR keeps the 1 GiB file
#   LAYOUTS=large bench/chaincheck.sh
set -euo pipefail
rounds=${ROUNDS:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cores=$(nproc)
cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p partseal --features cli --bin partseal
partseal="$here/target/release/partseal"
command -v openssl > /dev/null || { echo "openssl is missing" >&2; exit 2; }

dir=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$dir"
[ -n "${BENCH_DIR:-}" ] || trap 'rm -rf "$dir"' EXIT
size=$((1 << 30))
if [ ! -f "$dir/file.bin" ] || [ "$(stat -c %s "$dir/file.bin")" -ne "$size" ]; then
  echo "creating 1 GiB of random bytes in $dir..." >&2
  head -c "$size" /dev/urandom > "$dir/file.bin"
fi
# The parts are written anew on every run: how they were written decides
# their layout only while they stay in the page cache since (read back from
# the disk, they get readahead's folio sizes instead).
layouts=${LAYOUTS:-large small}
for layout in $layouts; do
  parts="$dir/$layout"
  rm -rf "$parts"
  mkdir -p "$parts"
  case $layout in
    large)
      for i in $(seq 0 63); do
        dd if="$dir/file.bin" of="$parts/part.$(printf %03d "$i")" bs=16M skip="$i" count=1 \
          iflag=fullblock status=none
      done
      ;;
    small) split -b $((16 << 20)) -d -a 3 "$dir/file.bin" "$parts/part." ;;
    *) echo "unknown layout $layout (large, small)" >&2; exit 2 ;;
  esac
done
if [ "$dir/file.bin" -nt "$dir/plan.json" ]; then
  "$partseal" ctx --part-size $((16 << 20)) "$dir/file.bin" > "$dir/plan.json"
fi
# Written back, cached and locked in memory: the check is measured on the
# CPU, not the disk. The kernel may page out cold page-cache pages between
# rounds (a VM's memory reclaim does), so a helper process maps every part
# and holds it with mlock until the script ends; each round also reports the
# blocks it read from the disk, which must be 0.
sync
all_parts=()
for layout in $layouts; do all_parts+=("$dir/$layout"/part.*); done
rm -f "$dir/lock.out"
python3 - "${all_parts[@]}" > "$dir/lock.out" <<'PY' &
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_READ, MAP_SHARED = 1, 1
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    addr = libc.mmap(None, size, PROT_READ, MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value) or libc.mlock(addr, size) != 0:
        print("unlocked", os.strerror(ctypes.get_errno()), flush=True)
        break
else:
    print("locked", flush=True)
signal.pause()
PY
locker=$!
trap 'kill "$locker" 2> /dev/null || true; [ -n "${BENCH_DIR:-}" ] || rm -rf "$dir"' EXIT
until [ -s "$dir/lock.out" ]; do
  kill -0 "$locker" 2> /dev/null || { echo "could not hold the parts in memory" >&2; exit 2; }
  sleep 0.2
done
if ! grep -q '^locked' "$dir/lock.out"; then
  echo "mlock of the parts failed ($(cat "$dir/lock.out")); rounds may read from the disk" >&2
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
speeds=()
declare -A checks
for r in $(seq "$rounds"); do
  # openssl prints k (1000-byte units) per second for the 1 MiB block size.
  k=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2> /dev/null | awk '/^sha256/ { sub(/k$/, "", $2); print $2 }')
  speeds+=("$k")
  line="round $r: openssl one core ${k}k B/s"
  for layout in $layouts; do
    # Wall time and blocks read from the disk, from the child's rusage.
    read -r secs blocks < <(python3 - "$partseal" verify --plan "$dir/plan.json" "$dir/$layout"/part.* <<'PY'
import resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
t = time.perf_counter() - t0
print(f"{t:.6f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock}")
PY
)
    [ -n "${secs:-}" ] || { echo "verify --plan failed in round $r ($layout)" >&2; exit 1; }
    checks[$layout]="${checks[$layout]:-} $secs"
    line+=", $layout $secs s ($blocks blocks read from the disk)"
  done
  echo "$line" >&2
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
summary=()
for layout in $layouts; do summary+=("$layout:${checks[$layout]# }"); done
python3 - "$size" "$cores" "$load_before" "$load_after" "${speeds[*]}" "${summary[@]}" <<'PY'
import statistics, sys
size, cores = int(sys.argv[1]), int(sys.argv[2])
speeds = [float(x) * 1000 for x in sys.argv[5].split()]
one = statistics.median(speeds)
limit = cores * one
print(f"load average before: {sys.argv[3]}, after: {sys.argv[4]}")
print(f"openssl speed -evp sha256, one core: {one / 1e9:.3f} GB/s (median of {len(speeds)})")
for arg in sys.argv[6:]:
    layout, times = arg.split(":")
    checks = [float(x) for x in times.split()]
    t = statistics.median(checks)
    got = size / t
    share = got / limit
    rounds = ", ".join(f"{100 * size / c / limit:.1f}%" for c in checks)
    print(f"verify --plan, 1 GiB in 64 parts, {layout} folios: {t:.3f} s = {got / 1e9:.3f} GB/s"
          f" (median) = {100 * share:.1f}% of the {cores}-core limit ({limit / 1e9:.3f} GB/s)"
          f"   [target >= 90%: {'met' if share >= 0.9 else 'MISSED'}]; rounds: {rounds}")
PY
