#!/usr/bin/env bash
# The PKCS#11 benchmarks on SoftHSM as a table: crypto11 in this process (the baseline),
# the pkcs11 backend in this process, and the daemon through its Unix socket with two
# HTTP clients (net/http, and a raw HTTP/1.1 one), at 1 to 16 callers.
#
# Other programs on the machine move single runs a lot, so the test binary runs ROUNDS
# times, each round running every benchmark once, and the table gives the medians.
#
#   bench/pkcs11.sh                 # ROUNDS=3 BENCHTIME=2s
#   ROUNDS=5 BENCHTIME=3s bench/pkcs11.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
benchtime=${BENCHTIME:-2s}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/pkcs11.test" ./backends/pkcs11
for r in $(seq "$rounds"); do
	echo "round $r of $rounds..." >&2
	(cd backends/pkcs11 && "$tmp/pkcs11.test" -test.run '^$' -test.bench . -test.benchtime "$benchtime") | grep '^Benchmark' | tee -a "$tmp/runs.txt" >&2
done
python3 - "$tmp/runs.txt" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    name = re.sub(r"-\d+$", "", f[0])
    m = {f[i + 1]: float(f[i]) for i in range(2, len(f) - 1, 2)}
    runs.setdefault(name, []).append(m)
def med(name, unit):
    v = [m[unit] for m in runs.get(name, []) if unit in m]
    return statistics.median(v) if v else None
cols = [("crypto11 in-process", "BenchmarkCrypto11InProcess/callers=%d"),
        ("backend in-process", "BenchmarkBackendInProcess/callers=%d"),
        ("daemon, net/http client", "BenchmarkDaemonUnixSocket/callers=%d/client=http"),
        ("daemon, raw client", "BenchmarkDaemonUnixSocket/callers=%d/client=raw")]
callers = [1, 2, 4, 8, 16]
best = max(med(cols[0][1] % n, "sig/s") or 0 for n in callers)
print("signatures/s, median of %d rounds (p99 latency in µs; CPU µs per signature, load generator included)\n" % max(len(v) for v in runs.values()))
print("| callers | " + " | ".join(c[0] for c in cols) + " | daemon ÷ best crypto11 (net/http / raw) |")
print("|---:|" + "---:|" * len(cols) + "---:|")
for n in callers:
    cells = []
    for _, pat in cols:
        name = pat % n
        r, p, c = med(name, "sig/s"), med(name, "p99-µs"), med(name, "cpu-µs/op")
        cells.append("—" if r is None else "%d (p99 %d; cpu %d)" % (r, p, c))
    ratio = ["%d %%" % round(100 * (med(cols[i][1] % n, "sig/s") or 0) / best) for i in (2, 3)]
    print("| %d | %s | %s |" % (n, " | ".join(cells), " / ".join(ratio)))
print("\nbest crypto11 in-process: %d/s; the target is 80 %% of it (%d/s) at 8 callers" % (best, 0.8 * best))
PY
