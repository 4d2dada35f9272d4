"""The task RQ's workers run in the remote pool bench (see rq_pool.py)."""


def square(x):
    return x * x
