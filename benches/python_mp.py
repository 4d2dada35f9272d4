#!/usr/bin/env python3
"""Python's multiprocessing Queue and Pipe, measured like benches/queue_vs_pipe.rs,
and faster-fifo's Queue (a C++ replacement for it) when it is installed.

Cases (start method "fork"):
  1to1/<size>  one producer process, the main process consumes:
               Queue put/get of a bytes object, Pipe send_bytes/recv_bytes
               (the default duplex Pipe, a socketpair)
  rtt/8B       ping-pong of an 8-byte bytes object: over a duplex Pipe,
               and over two Queues
faster-fifo (peer "faster_fifo", when `import faster_fifo` works): the same
1to1 and rtt cases with faster_fifo.Queue put/get of bytes objects, its
buffer sized to hold 8 messages (at least 1 MiB), like multiproc's ring.

Sizes: 8 B, 64 B, 1 KiB, 64 KiB, 1 MiB. A run is timed from the start
signal until the consumer has received the last message.

Prints one JSON object per case on stdout, for instance
  {"peer": "python_queue", "case": "1to1/8B", "size": 8, "procs": 1,
   "messages": 20000, "seconds": 0.1, "msg_per_s": 2e5, "mb_per_s": 1.6}
(for rtt cases msg_per_s is round trips per second and rtt_us is given).

  python3 benches/python_mp.py            # 3 runs per case, median
  python3 benches/python_mp.py --quick    # 1 short run per case, a few seconds
  python3 benches/python_mp.py --serve    # Pipe runs on request (below)

--serve measures Python's Pipe on request, so that another program can
alternate it with its own contenders in one run. Each line on stdin is a JSON
object {"case": "flow" or "rtt", "size": bytes (flow only), "n": messages or
round trips, "send_cpu": CPU or null, "recv_cpu": CPU or null}; the sending
side (the producer; the round trip's caller) runs on send_cpu and the
receiving side (the consumer; the echo) on recv_cpu, null leaving a side to
the kernel. Each answer is one line {"seconds": time of the run}.
"""

import argparse
import json
import multiprocessing as mp
import os
import queue as queue_mod
import statistics
import sys
import time

SIZES = [8, 64, 1024, 64 * 1024, 1 << 20]
RTT_SIZE = 8

try:
    import faster_fifo
except ImportError:
    faster_fifo = None


def fifo(size):
    """A faster-fifo queue with room for 8 messages of `size`, 1 MiB at least."""
    return faster_fifo.Queue(max_size_bytes=max(1 << 20, 8 * (size + 64)))


def fifo_get(q):
    # faster-fifo's get raises Empty after its timeout: wait for good.
    while True:
        try:
            return q.get(timeout=10.0)
        except queue_mod.Empty:
            continue


def size_name(size):
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20}MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10}KiB"
    return f"{size}B"


def queue_producer(q, start, n, size):
    payload = b"\x07" * size
    start.wait()
    for _ in range(n):
        q.put(payload)


def pipe_producer(conn, start, n, size):
    payload = b"\x07" * size
    start.wait()
    for _ in range(n):
        conn.send_bytes(payload)


def pipe_echo(conn):
    while True:
        msg = conn.recv_bytes()
        if not msg:
            return
        conn.send_bytes(msg)


def queue_echo(ping, pong):
    while True:
        msg = ping.get()
        if msg is None:
            return
        pong.put(msg)


def fifo_producer(q, start, n, size):
    payload = b"\x07" * size
    start.wait()
    for _ in range(n):
        q.put(payload, timeout=1e6)


def fifo_echo(ping, pong):
    while True:
        msg = fifo_get(ping)
        if msg is None:
            return
        pong.put(msg, timeout=1e6)


def pinned(cpu, target, *args):
    """target(*args) on `cpu` (None: where the kernel puts it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    target(*args)


def flow(ctx, kind, n, size, child_cpu=None):
    """Seconds to move n messages of size bytes, producer child -> main
    (the Pipe's producer on child_cpu when it is given)."""
    start = ctx.Event()
    if kind == "faster_fifo":
        q = fifo(size)
        child = ctx.Process(target=fifo_producer, args=(q, start, n, size))
        child.start()
        t0 = time.perf_counter()
        start.set()
        for _ in range(n):
            fifo_get(q)
        took = time.perf_counter() - t0
    elif kind == "queue":
        q = ctx.Queue()
        child = ctx.Process(target=queue_producer, args=(q, start, n, size))
        child.start()
        t0 = time.perf_counter()
        start.set()
        for _ in range(n):
            q.get()
        took = time.perf_counter() - t0
    else:
        # The default duplex Pipe (a socketpair), like multiproc's Pipe::new.
        rx, tx = ctx.Pipe()
        child = ctx.Process(target=pinned, args=(child_cpu, pipe_producer, tx, start, n, size))
        child.start()
        t0 = time.perf_counter()
        start.set()
        for _ in range(n):
            rx.recv_bytes()
        took = time.perf_counter() - t0
    child.join()
    return took


def round_trip(ctx, kind, n, child_cpu=None):
    """Seconds for n round trips of an 8-byte message (the Pipe's echo on
    child_cpu when it is given)."""
    msg = b"\x01" * RTT_SIZE
    if kind == "pipe":
        here, there = ctx.Pipe()
        child = ctx.Process(target=pinned, args=(child_cpu, pipe_echo, there))
        child.start()
        here.send_bytes(msg)  # warm the partner up
        here.recv_bytes()
        t0 = time.perf_counter()
        for _ in range(n):
            here.send_bytes(msg)
            here.recv_bytes()
        took = time.perf_counter() - t0
        here.send_bytes(b"")
    elif kind == "faster_fifo":
        ping, pong = fifo(RTT_SIZE), fifo(RTT_SIZE)
        child = ctx.Process(target=fifo_echo, args=(ping, pong))
        child.start()
        ping.put(msg)
        fifo_get(pong)
        t0 = time.perf_counter()
        for _ in range(n):
            ping.put(msg)
            fifo_get(pong)
        took = time.perf_counter() - t0
        ping.put(None)
    else:
        ping, pong = ctx.Queue(), ctx.Queue()
        child = ctx.Process(target=queue_echo, args=(ping, pong))
        child.start()
        ping.put(msg)
        pong.get()
        t0 = time.perf_counter()
        for _ in range(n):
            ping.put(msg)
            pong.get()
        took = time.perf_counter() - t0
        ping.put(None)
    child.join()
    return took


def serve(ctx):
    """Pipe runs on request, one JSON line in and one out (see above)."""
    everywhere = os.sched_getaffinity(0)
    for line in sys.stdin:
        ask = json.loads(line)
        send_cpu, recv_cpu = ask.get("send_cpu"), ask.get("recv_cpu")
        # This process is the consumer of a flow and the caller of a round
        # trip; the child it forks is the other side.
        here, child = (recv_cpu, send_cpu) if ask["case"] == "flow" else (send_cpu, recv_cpu)
        os.sched_setaffinity(0, everywhere if here is None else {here})
        if ask["case"] == "flow":
            took = flow(ctx, "pipe", ask["n"], ask["size"], child)
        else:
            took = round_trip(ctx, "pipe", ask["n"], child)
        os.sched_setaffinity(0, everywhere)
        print(json.dumps({"seconds": took}), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run per case")
    parser.add_argument("--serve", action="store_true", help="Pipe runs on request")
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    if args.serve:
        return serve(ctx)
    runs = 1 if args.quick else 3
    # About 0.1 s (quick) or 0.5 s per run at Python's usual rates.
    budget_bytes = (64 if args.quick else 320) << 20
    max_msgs = 20_000 if args.quick else 100_000

    def emit(peer, case, size, n, seconds):
        rate = n / seconds
        line = {
            "peer": peer,
            "case": case,
            "size": size,
            "procs": 1,
            "messages": n,
            "seconds": round(seconds, 6),
            "msg_per_s": round(rate, 1),
            "mb_per_s": round(rate * size / 1e6, 3),
        }
        if case.startswith("rtt/"):
            line["rtt_us"] = round(1e6 / rate, 3)
        print(json.dumps(line), flush=True)

    kinds = ["queue", "pipe"] + (["faster_fifo"] if faster_fifo else [])
    peer = {"queue": "python_queue", "pipe": "python_pipe", "faster_fifo": "faster_fifo"}
    for kind in kinds:
        for size in SIZES:
            n = max(32, min(max_msgs, budget_bytes // size))
            flow(ctx, kind, min(n, 1000), size)  # warm-up
            took = statistics.median(flow(ctx, kind, n, size) for _ in range(runs))
            emit(peer[kind], f"1to1/{size_name(size)}", size, n, took)
    for kind in kinds:
        n = 2_000 if args.quick else 10_000
        took = statistics.median(round_trip(ctx, kind, n) for _ in range(runs))
        emit(peer[kind], f"rtt/{size_name(RTT_SIZE)}", RTT_SIZE, n, took)
    return 0


if __name__ == "__main__":
    sys.exit(main())
