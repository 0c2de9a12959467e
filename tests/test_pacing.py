"""Paced reads: however long a read grows, it takes no more than its share of the time."""

from __future__ import annotations

from itertools import cycle

from hypothesis import given
from hypothesis import strategies as st

from activestream.pacing import Paced


@given(durations=st.lists(st.floats(0.0, 50.0), min_size=1, max_size=40),
       gaps=st.lists(st.floats(0.0, 5.0), min_size=40, max_size=40),
       every=st.floats(0.0, 10.0), share=st.floats(0.01, 1.0))
def test_reads_take_at_most_their_share_of_the_time_between_them(durations, gaps, every, share):
    now, starts, cost = [0.0], [], cycle(durations)

    def read():
        starts.append(now[0])
        now[0] += next(cost)
        return len(starts)

    paced = Paced(read, every=every, share=share, clock=lambda: now[0])
    for gap in gaps * 5:
        assert paced.get() == len(starts)  # always the latest read's result
        now[0] += gap
    took = [durations[i % len(durations)] for i in range(len(starts))]
    for i in range(1, len(starts)):
        assert starts[i] - starts[i - 1] >= max(every, took[i - 1] / share) - 1e-9
        assert sum(took[:i]) <= share * (starts[i] - starts[0]) + 1e-6


def test_the_first_call_reads_and_a_bad_share_is_refused():
    assert Paced(lambda: 7, every=60.0).get() == 7
    try:
        Paced(lambda: 7, every=1.0, share=0.0)
    except ValueError as e:
        assert "share" in str(e)
    else:
        raise AssertionError("a share of 0 was accepted")
