"""Python's RQ doing what the remote pool bench does: N trivial tasks
(square an int) through one Redis server to WORKERS `rq worker`
processes, timed from the first enqueue until every job has finished.

Usage: rq_pool.py URL N WORKERS ROUNDS
Prints one line per round: `tasks_per_second X`.

Run by `cargo bench -p multiproc-redis --bench pool` with the Python of a
virtual environment holding `rq`; the workers import `rq_tasks` from this
directory.
"""

import os
import subprocess
import sys
import time

from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry

import rq_tasks


def main():
    url, n, workers, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    here = os.path.dirname(os.path.abspath(__file__))
    con = Redis.from_url(url)
    name = "bench_rq_%d" % os.getpid()
    q = Queue(name, connection=con)
    rq_cli = os.path.join(os.path.dirname(sys.executable), "rq")
    env = dict(os.environ, PYTHONPATH=here)
    procs = [
        subprocess.Popen(
            [rq_cli, "worker", "--url", url, "--quiet", name],
            cwd=here,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        deadline = time.time() + 60
        while Worker.count(queue=q) < workers:
            if time.time() > deadline:
                raise SystemExit("rq workers did not start")
            time.sleep(0.05)
        finished = FinishedJobRegistry(queue=q)
        failed = FailedJobRegistry(queue=q)
        for _ in range(rounds):
            before = finished.count
            start = time.perf_counter()
            for i in range(n):
                q.enqueue(rq_tasks.square, i)
            while finished.count - before < n:
                if failed.count:
                    raise SystemExit("rq jobs failed")
                time.sleep(0.002)
            took = time.perf_counter() - start
            print("tasks_per_second %.1f" % (n / took), flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
