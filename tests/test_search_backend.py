"""Where ``auto`` sends a category's patch search: on a CPU, a small bank to the exact search of every row and a larger
one to a trial of HNSW against the search in clusters (``choose``); on an accelerator, by the device's memory (a bank
too large for it is served by HNSW instead of failing every query)."""

import torch

from config import EXACT_ON_CPU_FLOATS
from patchcore.scoring import ExactSearch
from serving.inspector import device_room, search_backend

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no CUDA to exist


def test_on_a_cpu_a_larger_bank_is_timed_both_ways():
    small, large = EXACT_ON_CPU_FLOATS, EXACT_ON_CPU_FLOATS + 1
    assert search_backend("auto", CPU, small, 8 * small, None) == "exact"
    assert search_backend("auto", CPU, large, 8 * large, None) == "choose"
    assert device_room(CPU) is None


def test_on_an_accelerator_the_copy_must_fit_its_room():
    floats = 1_000_000 * 1536  # a million rows of Wide-ResNet-50's patches: 12 GB with the cosine copy
    copy = ExactSearch.copy_bytes(floats, "cosine")
    assert search_backend("auto", GPU, floats, copy, room=copy) == "exact"
    assert search_backend("auto", GPU, floats, copy, room=copy - 1) == "database"
    assert search_backend("auto", GPU, floats, copy, room=None) == "exact"  # a device that cannot say: as before
    # a setting made by hand is kept: the operator asked for it
    assert search_backend("exact", GPU, floats, copy, room=0) == "exact"
    assert search_backend("database", CPU, 10, 80, None) == "database"


def test_the_copy_bytes_are_what_the_search_holds():
    bank = torch.randn(300, 48)
    for metric in ("cosine", "l2"):
        search = ExactSearch(bank.clone(), metric)
        held = {t.data_ptr(): t.numel() * t.element_size() for t in (search.bank, search._matrix)}
        assert ExactSearch.copy_bytes(bank.numel(), metric) == sum(held.values())
