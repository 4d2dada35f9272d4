"""Python's side of benches/pool.rs: `multiprocessing.Pool(2).map` of a
trivial function over N items at chunk size 1, timed like the Rust side:
the pool is started and warmed up first, then each timed `map` runs from
the call until the list of results is back. Prints one line per run:
`tasks_per_second <float>`.

    python3 crates/multiproc-process/benches/python_pool.py [N] [RUNS]
"""
import multiprocessing
import sys
import time


def double(x):
    return x * 2


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with multiprocessing.Pool(2) as pool:
        pool.map(double, range(1000), chunksize=1)  # warm up
        for _ in range(runs):
            start = time.perf_counter()
            out = pool.map(double, range(n), chunksize=1)
            took = time.perf_counter() - start
            assert out[-1] == 2 * (n - 1)
            print(f"tasks_per_second {n / took:.1f}", flush=True)


if __name__ == "__main__":
    main()
