"""The trial that chooses a category's search on a CPU (``serving.search_choice``): the two searches take turns, each
one's first query is left out, only searches that ran alone count, and the lower median wins, whichever search it is;
concurrent queries are handed out in turn. (Real searches choosing over real queries: tests/api/test_query.py.)"""

import threading
from collections import Counter

import pytest

from serving.search_choice import CANDIDATES, FEWEST, MOST_ASKED, WARM_UP, SearchChoice


def test_the_lower_median_wins_once_each_search_has_its_trials_and_its_first_query_is_left_out():
    clusters = object()  # the search in this process that the trial times
    choice = SearchChoice(clusters, trials=3)
    assert [choice.next() for _ in range(8)] == ["database", "exact"] * 4
    for seconds in (0.001, 0.030, 0.031, 0.029):
        choice.record("database", seconds)
    for seconds in (1.0, 0.020, 0.040):  # the first query, slowest of all: counted, it would lose (median 30.5 ms)
        choice.record("exact", seconds)
    assert choice.chosen is None and not choice.newly_chosen() and choice.next() in CANDIDATES
    choice.record("exact", 0.021)
    assert choice.newly_chosen() and not choice.newly_chosen()  # said once
    assert choice.chosen == "exact" and choice.medians_ms() == pytest.approx({"database": 30.0, "exact": 21.0})
    assert choice.here is clusters  # kept: it serves every query now
    assert choice.timed() == {"database": 3, "exact": 3}
    assert all(choice.next() == "exact" for _ in range(5))
    choice.record("database", 0.0)
    assert choice.chosen == "exact" and not choice.newly_chosen()  # a late answer changes nothing


def test_the_database_wins_where_it_is_the_faster_and_the_clusters_are_let_go():
    choice = SearchChoice(object(), trials=2)
    for database, exact in ((0.5, 0.5), (0.010, 0.012), (0.011, 0.013)):
        assert choice.here is not None
        choice.record("database", database)
        choice.record("exact", exact)
    assert choice.chosen == "database" and choice.next() == "database" and choice.here is None


def test_concurrent_queries_are_handed_out_in_turn():
    choice = SearchChoice()
    handed: list[str] = []
    lock = threading.Lock()

    def ask() -> None:
        for _ in range(MOST_ASKED // 8):
            backend = choice.next()
            with lock:
                handed.append(backend)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(handed) == {"database": MOST_ASKED // 2, "exact": MOST_ASKED // 2} and choice.chosen is None


def test_a_trial_busy_from_its_start_ends_after_its_queries_with_hnsw_unless_enough_ran_alone():
    busy = SearchChoice(object())
    assert {busy.next() for _ in range(MOST_ASKED)} == set(CANDIDATES) and busy.chosen is None
    assert busy.next() == "database" and busy.here is None and busy.newly_chosen() and not busy.newly_chosen()
    some = SearchChoice(object())
    for _ in range(WARM_UP + FEWEST):
        some.record("database", 0.030)
        some.record("exact", 0.020)
    for _ in range(MOST_ASKED + 1):
        some.next()
    assert some.chosen == "exact" and some.here is not None
