#!/usr/bin/env python3
"""Turns traces of the release binary (addresses executed, from trace.c) into the linker's
symbol ordering file: the functions containing those addresses, each once, in the order the
traces name them (the first trace first), then the names OUT already had that the traces did
not see (a trace misses a function entered from a page that was open: each run of run.sh
finds more of them).

Usage: order.py BINARY OUT TRACE...
"""
import bisect
import subprocess
import sys


def main():
    binary, out, traces = sys.argv[1], sys.argv[2], sys.argv[3:]
    loads = []
    headers = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True)
    for line in headers.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD":
            loads.append((int(fields[1], 16), int(fields[2], 16), int(fields[4], 16)))
    functions = []
    table = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True)
    for line in table.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW" and int(fields[1], 16):
            functions.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    functions.sort()
    starts = [f[0] for f in functions]
    names, seen, size = [], set(), 0
    for trace in traces:
        for line in open(trace):
            offset = int(line, 16)
            address = next((offset - o + v for o, v, n in loads if o <= offset < o + n), None)
            if address is None:
                continue
            i = bisect.bisect_right(starts, address) - 1
            if i < 0 or address >= functions[i][0] + functions[i][1]:
                continue
            name = functions[i][2]
            if name not in seen:
                seen.add(name)
                names.append(name)
                size += functions[i][1]
        print(f"{trace}: {len(names)} functions so far, {size / 1e6:.2f} MB")
    try:
        kept = [name for name in open(out).read().split() if name not in seen]
    except FileNotFoundError:
        kept = []
    names += kept
    print(f"{len(kept)} names kept from {out}")
    with open(out, "w") as f:
        f.write("".join(name + "\n" for name in names))


if __name__ == "__main__":
    main()
