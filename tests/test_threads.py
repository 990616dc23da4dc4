"""npvae.threads: every chunk runs exactly once, errors surface, thread count from the environment."""
import threading

import numpy as np
import pytest

from npvae import threads


@pytest.mark.parametrize("count", ["1", "2", "4"])
@pytest.mark.parametrize("n,step", [(1, 1), (7, 2), (16, 3), (5, 8)])
def test_each_chunk_once(monkeypatch, count, n, step):
    monkeypatch.setenv("NPVAE_NUM_THREADS", count)
    seen = np.zeros(n, dtype=int)
    workers = set()
    lock = threading.Lock()

    def work(part, worker):
        with lock:
            seen[part] += 1
            workers.add(worker)
        assert part.stop - part.start <= step

    threads.for_each_chunk(n, step, work)
    assert seen.tolist() == [1] * n
    assert workers <= set(range(int(count)))


def test_error_in_a_worker_is_raised(monkeypatch):
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")

    def work(part, worker):
        if part.start == 3:
            raise RuntimeError("chunk 3 failed")

    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        threads.for_each_chunk(6, 1, work)


def test_blas_is_single_threaded_inside(monkeypatch):
    from threadpoolctl import threadpool_info
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")
    counts = []
    threads.for_each_chunk(2, 1, lambda part, worker: counts.append(
        [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]))
    assert counts and all(c == [1] * len(c) for c in counts)


def test_bad_thread_count_is_explained(monkeypatch):
    monkeypatch.setenv("NPVAE_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="NPVAE_NUM_THREADS"):
        threads.worker_count()
