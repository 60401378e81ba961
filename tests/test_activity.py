"""The queries at work in one process (``serving.activity``): what counts as a search that ran alone (the search
trial times only those), and the share of the cores each query's torch work takes beside the others."""

import threading

import torch

from serving.activity import Activity


def test_a_search_counts_as_alone_only_while_no_other_work_runs_or_begins():
    activity = Activity()
    with activity.working():
        mark = activity.alone()
        assert mark is not None and activity.still_alone(mark)
        with activity.working():  # another query embeds meanwhile
            assert activity.alone() is None and not activity.still_alone(mark)
        assert not activity.still_alone(mark)  # it began during the search, though it is over
    with activity.working(), activity.working():
        assert activity.alone() is None
    with activity.working():
        assert activity.still_alone(activity.alone())


def test_concurrent_queries_share_the_cores_and_a_query_alone_takes_them_all():
    activity = Activity(cores=4)
    seen: dict[str, int] = {}
    inside = [threading.Event() for _ in range(3)]
    leave = threading.Event()

    def query(name: str, after: threading.Event | None, entered: threading.Event) -> None:
        if after is not None:
            after.wait()
        with activity.working():
            seen[name] = torch.get_num_threads()
            entered.set()
            leave.wait()
        seen[name + " after"] = torch.get_num_threads()

    threads = [
        threading.Thread(target=query, args=(name, inside[i - 1] if i else None, inside[i]))
        for i, name in enumerate(["first", "second", "third"])
    ]
    mine = torch.get_num_threads()
    for thread in threads:
        thread.start()
    inside[2].wait()
    assert torch.get_num_threads() == mine  # each thread's count is its own
    leave.set()
    for thread in threads:
        thread.join()
    assert (seen["first"], seen["second"], seen["third"]) == (4, 2, 1)
    assert seen["first after"] == seen["second after"] == seen["third after"] == 4
    with activity.working():
        assert torch.get_num_threads() == 4  # alone again: every core
    torch.set_num_threads(mine)
