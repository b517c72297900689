#!/usr/bin/env python3
"""How long a busy thread is kept off its CPU by the machine itself.

    scripts/pauses.py [SECONDS]      # default 10; one spinner per CPU

One process per CPU, each pinned there, reads the monotonic clock in a loop
and counts the gaps between two reads: with nothing else running, a gap is
time the CPU was taken away (by the hypervisor, an interrupt, the kernel).
Prints, per CPU, the gaps over 0.1, 0.5, 1 and 2 ms and the longest.
Linux only (os.sched_setaffinity).
"""
import os
import sys
import time
from multiprocessing import Process, Queue

LIMITS_NS = (100_000, 500_000, 1_000_000, 2_000_000)


def spin(cpu, seconds, out):
    os.sched_setaffinity(0, {cpu})
    clock = time.monotonic_ns
    end = clock() + int(seconds * 1e9)
    counts = [0] * len(LIMITS_NS)
    longest = 0
    previous = clock()
    while previous < end:
        now = clock()
        gap = now - previous
        previous = now
        if gap > LIMITS_NS[0]:
            for i, limit in enumerate(LIMITS_NS):
                if gap > limit:
                    counts[i] += 1
            longest = max(longest, gap)
    out.put((cpu, counts, longest))


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    cpus = sorted(os.sched_getaffinity(0))
    out = Queue()
    workers = [Process(target=spin, args=(cpu, seconds, out)) for cpu in cpus]
    for worker in workers:
        worker.start()
    results = sorted(out.get() for _ in workers)
    for worker in workers:
        worker.join()
    print(f"pauses in {seconds:g} s of spinning, one process per CPU")
    for cpu, counts, longest in results:
        over = ", ".join(
            f">{limit / 1e6:g} ms: {count}" for limit, count in zip(LIMITS_NS, counts)
        )
        print(f"CPU {cpu}: {over}; longest {longest / 1e6:.2f} ms")


if __name__ == "__main__":
    main()
