"""Per-thread work per step from `perf script -G --show-mmap-events -F comm,ip,dso,time` on stdin
(bench/thread_work.sh): argv[1] the masklm binary profiled, argv[2] its `bench --json` output (for
the seconds per step), argv[3] perf's sampling frequency (Hz).

Each sample is one of: spin (in masklm's code, within 12 bytes after a `pause`, f3 90: CubeCL's
spin loops are `pause` and a counter), kernel (system calls: mostly the yields and futex waits that
follow a spin, partly page faults and wake-ups), or work (the rest: masklm, burn, CubeCL, libc)."""
import collections
import json
import os
import re
import sys

binary = open(sys.argv[1], "rb").read()
log = open(sys.argv[2]).read()
freq = float(sys.argv[3])
sec_per_step = json.loads(log[log.index('{"tokens_per_sec"'):].splitlines()[0])["sec_per_step"]

base, path = None, None  # the binary's load address minus its file offset, and its path
counts = collections.defaultdict(collections.Counter)
times = []
for line in sys.stdin:
    if "PERF_RECORD_MMAP" in line:
        m = re.search(r"\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+) .*r-xp (\S+)", line)
        if m and base is None and os.path.basename(m.group(4)) == "masklm":
            base, path = int(m.group(1), 16) - int(m.group(3), 16), m.group(4)
        continue
    parts = line.split()
    if len(parts) < 4:
        continue
    comm, t, ip, dso = parts[0], parts[1].rstrip(":"), parts[2], parts[3]
    times.append(float(t))
    thread = re.sub(r"-\d+-\d+$", "", comm)
    kind = "work"
    if "kernel" in dso:
        kind = "kernel"
    elif path is not None and path in dso:
        a = int(ip, 16) - base
        if b"\xf3\x90" in binary[max(a - 12, 0):a + 2]:
            kind = "spin"
    counts[thread][kind] += 1

if not times:
    sys.exit("no samples")
seconds = max(times) - min(times)
steps = seconds / sec_per_step
ms = lambda n: n / freq / steps * 1000
print(f"profile: {seconds:.1f} s, {steps:.1f} steps at the run's {sec_per_step:.3f} s/step, {freq:g} samples/s")
print("| thread | samples | spin ms/step | kernel ms/step | work ms/step |")
print("| --- | ---: | ---: | ---: | ---: |")
for thread, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
    print(f"| {thread} | {sum(c.values())} | {ms(c['spin']):.0f} | {ms(c['kernel']):.0f} | {ms(c['work']):.0f} |")
