"""fastmlp's barrier when a thread is very late (a busy machine): the waiters, past spinning and
yielding, nap, and still meet it, or stop when the barrier is aborted.

The late thread sleeps so that the waiter goes all the way to its naps; nothing here is timed.
"""

import threading
import time

from fastmlp.runtime.barrier import abort_barrier, barrier_state, barrier_wait

LATE_S = 0.05  # far beyond the ~1 ms of spinning and yielding before the naps


def wait_in_threads(state, parties, late=None):
    """barrier_wait(state, parties) from `parties` threads, the last one first calling late(); their results."""
    results = [None] * parties

    def party(i):
        if i == parties - 1 and late is not None:
            late()
        results[i] = barrier_wait(state, parties)

    threads = [threading.Thread(target=party, args=(i,)) for i in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a waiter never left the barrier"
    return results


def test_waiters_napping_for_a_very_late_thread_all_meet_it():
    state = barrier_state()
    barrier_wait(state, 1)  # compiled before the threads start
    assert wait_in_threads(state, 3, late=lambda: time.sleep(LATE_S)) == [True, True, True]
    assert wait_in_threads(state, 3) == [True, True, True]  # and the barrier is reusable


def test_aborting_releases_napping_waiters_with_false():
    state = barrier_state()
    barrier_wait(state, 1)

    def abort_instead():
        time.sleep(LATE_S)
        abort_barrier(state)

    assert wait_in_threads(state, 3, late=abort_instead) == [False, False, False]
