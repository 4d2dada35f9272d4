"""Python's side of benches/pipe.rs: multiprocessing.Pipe() send_bytes /
recv_bytes of 8-byte messages between two processes (fork), timed like the
Rust benchmark: from the first send until the child has received the last.

    python3 crates/multiproc-pipe/benches/python_pipe.py
"""
import os
import time
from multiprocessing import Pipe

N = 200_000


def main():
    a, b = Pipe()
    ctl_r, ctl_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        a.close()
        for _ in range(N):
            b.recv_bytes()
        os.write(ctl_w, b"k")
        os._exit(0)
    b.close()
    msg = b"x" * 8
    start = time.perf_counter()
    for _ in range(N):
        a.send_bytes(msg)
    os.read(ctl_r, 1)
    took = time.perf_counter() - start
    os.waitpid(pid, 0)
    print(f"python Pipe() send_bytes/recv_bytes 8 B: {N / took / 1e3:.0f} K msg/s")


if __name__ == "__main__":
    main()
