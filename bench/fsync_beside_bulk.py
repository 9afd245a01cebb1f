#!/usr/bin/env python3
"""How a bulk writer on the same disk delays small appends with fdatasync.

Three threads append 4 KiB and fdatasync in a loop, like three members'
logs; after one second, BULK other threads each write MB megabytes in
pieces of CHUNK KiB, each piece followed by an fdatasync and an optional
pause, like a member saving a snapshot or zero-filling a log segment.
Prints the appends' fdatasync latency while the bulk writes ran and
outside that time.

    python3 bench/fsync_beside_bulk.py CHUNK_KIB PAUSE_MS MB BULK [DIR]
    python3 bench/fsync_beside_bulk.py 8192 0 55 3     # 8 MiB pieces
    python3 bench/fsync_beside_bulk.py 512 2 55 3      # 512 KiB, 2 ms pause
"""
import os
import sys
import threading
import time

chunk = int(sys.argv[1]) * 1024
pause = float(sys.argv[2]) / 1e3
total = int(sys.argv[3]) << 20
bulk_writers = int(sys.argv[4])
directory = sys.argv[5] if len(sys.argv) > 5 else "."
start = time.perf_counter()
spans = []
samples = []


def bulk(i):
    time.sleep(1.0)
    began = time.perf_counter()
    path = os.path.join(directory, f"bulk{i}")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    piece = b"\1" * chunk
    written = 0
    while written < total:
        os.write(fd, piece)
        written += chunk
        os.fdatasync(fd)
        if pause:
            time.sleep(pause)
    os.fsync(fd)
    os.close(fd)
    os.unlink(path)
    spans.append((began - start, time.perf_counter() - start))


def log(i):
    path = os.path.join(directory, f"log{i}")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"\0" * (16 << 20))
    os.fsync(fd)
    record = b"x" * 4096
    offset = 0
    while time.perf_counter() - start < 5:
        at = time.perf_counter()
        os.pwrite(fd, record, offset)
        offset += len(record)
        os.fdatasync(fd)
        samples.append((at - start, time.perf_counter() - at))
    os.close(fd)
    os.unlink(path)


threads = [threading.Thread(target=log, args=(i,)) for i in range(3)]
threads += [threading.Thread(target=bulk, args=(i,)) for i in range(bulk_writers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
first = min((s[0] for s in spans), default=0.0)
last = max((s[1] for s in spans), default=0.0)
during = sorted(l * 1e3 for s, l in samples if first <= s <= last)
outside = sorted(l * 1e3 for s, l in samples if s < first or s > last)


def q(values, p):
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


print(
    f"pieces {chunk >> 10} KiB, pause {pause * 1e3:g} ms, {bulk_writers} x {total >> 20} MB "
    f"in {last - first:.2f} s; fdatasync ms while they ran: n {len(during)} "
    f"p50 {q(during, .5):.2f} p99 {q(during, .99):.1f} max {q(during, 1):.1f}; "
    f"outside: n {len(outside)} p50 {q(outside, .5):.2f} p99 {q(outside, .99):.1f}"
)
