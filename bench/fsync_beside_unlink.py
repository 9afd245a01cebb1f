#!/usr/bin/env python3
"""How removing large files delays small appends with fdatasync beside them.

Three threads append 4 KiB and fdatasync in a loop, like three members'
logs; after one second three others each remove a 64 MiB file, either
at once (unlink, then fsync of the directory) or cut down 8 MiB at a time
(each cut synced, 5 ms apart) before the unlink. Prints how long the
removals took and the appends' fdatasync latency meanwhile.

    python3 bench/fsync_beside_unlink.py whole|cuts [DIR]
"""
import os
import sys
import threading
import time

mode = sys.argv[1]
directory = sys.argv[2] if len(sys.argv) > 2 else "."
path = lambda name: os.path.join(directory, name)
for i in range(3):
    fd = os.open(path(f"seg{i}"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    for _ in range(16):
        os.write(fd, b"\0" * (4 << 20))
    os.fsync(fd)
    os.close(fd)
dir_fd = os.open(directory, os.O_RDONLY)
os.fsync(dir_fd)
time.sleep(1)
start = time.perf_counter()
spans = []
samples = []


def remove(i):
    time.sleep(1.0)
    began = time.perf_counter()
    if mode == "cuts":
        fd = os.open(path(f"seg{i}"), os.O_WRONLY)
        size = 64 << 20
        while size > 0:
            size -= 8 << 20
            os.ftruncate(fd, size)
            os.fdatasync(fd)
            time.sleep(0.005)
        os.close(fd)
    os.unlink(path(f"seg{i}"))
    os.fsync(dir_fd)
    spans.append((began - start, time.perf_counter() - start))


def log(i):
    fd = os.open(path(f"log{i}"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"\0" * (16 << 20))
    os.fsync(fd)
    offset = 0
    while time.perf_counter() - start < 3:
        at = time.perf_counter()
        os.pwrite(fd, b"x" * 4096, offset)
        offset += 4096
        os.fdatasync(fd)
        samples.append((at - start, time.perf_counter() - at))
    os.close(fd)
    os.unlink(path(f"log{i}"))


threads = [threading.Thread(target=log, args=(i,)) for i in range(3)]
threads += [threading.Thread(target=remove, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
first = min(s[0] for s in spans)
last = max(s[1] for s in spans)
during = sorted(l * 1e3 for s, l in samples if first <= s <= last + 0.05)
outside = sorted(l * 1e3 for s, l in samples if s < first or s > last + 0.05)
q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))] if v else 0.0
print(
    f"{mode}: removals took {(last - first) * 1e3:.1f} ms; fdatasync ms meanwhile: "
    f"n {len(during)} p50 {q(during, .5):.2f} max {q(during, 1):.1f}; "
    f"outside: p50 {q(outside, .5):.2f} p99 {q(outside, .99):.2f}"
)
