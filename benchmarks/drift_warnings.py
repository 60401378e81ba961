"""How often the drift warnings speak, on simulated lines whose truth is known: a warning that the predicted rate lies
outside the 90% interval (the rule until 2026-12-07) beside one that, besides, one answer cannot decide
(``serving.drift.outside``: still outside with one answer's outcome moved toward the prediction).

The line (``answers``, which ``tests/test_drift.py`` draws its windows from): a threshold at a 3% predicted
false-alarm rate; each good part's place among good parts is the normal tail beyond its log score, which a shift of
the whole line moves by ``shift`` of a standard deviation (a lamp ageing); a defective part (the share ``defects``)
is flagged with recall 0.8 and, missed, passes above the good median. Two views of it:

- windows of 500 answers, each judged once (what ``tests/test_drift.py`` asserts): the share of windows in which the
  flagged share (``serving.drift.drift``) and the passed parts above the good median (``body``) warn;
- one line looked at after every answer, as the pages and ``/metrics`` do: the share of lines that warn at some
  look, the share of looks that warn, and the median answer at which a shifted line first warns.

Writes ``docs/drift_warnings.png`` (the share of lines warned by each answer, both rules).

    python benchmarks/drift_warnings.py
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from scipy import stats

from patchcore.threshold import clopper_pearson
from serving.drift import body, drift, outside
from store.inspections import Hour

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RATE = 0.03
EXPECTED = (0.5 - RATE) / (1 - RATE)  # the passed parts' share above the good median on a calibrated line
interval = lru_cache(maxsize=None)(clopper_pearson)


def answers(rng: np.random.Generator, shape: tuple[int, ...], shift: float, defects: float) -> tuple[np.ndarray, ...]:
    """Flagged, and passed above the good median, for each answer."""
    defective = rng.random(shape) < defects
    p_value = stats.norm.sf(rng.normal(shift, 1, shape))
    flagged = np.where(defective, rng.random(shape) < 0.8, p_value < RATE)
    above = np.where(defective, True, p_value < 0.5) & ~flagged
    return flagged, above


def windows(rng: np.random.Generator, shift: float, defects: float, count: int) -> dict[str, float]:
    """Each rule's share of windows of 500 answers warned, by the flagged share and by the body."""
    flagged, above = answers(rng, (count, 500), shift, defects)
    said = {"flagged interval": 0, "flagged one answer": 0, "body interval": 0, "body one answer": 0}
    for f, a in zip(flagged.sum(axis=1), above.sum(axis=1), strict=True):
        hour = Hour("h", 500, int(f), 0, 0, 0, 0, int(a))
        for name, report, predicted in (
            ("flagged", drift([hour], RATE, 24), RATE),
            ("body", body([hour], RATE), EXPECTED),
        ):
            low, high = report["interval"]
            said[f"{name} interval"] += not low <= predicted <= high
            said[f"{name} one answer"] += report["warning"]
    return {name: warned / count for name, warned in said.items()}


def looked(rng: np.random.Generator, shift: float, lines: int, length: int) -> dict[str, np.ndarray]:
    """Each rule's warning at every look (lines x answers), by the flagged share and by the body."""
    flagged, above = answers(rng, (lines, length), shift, 0.0)
    flagged_so_far, above_so_far = flagged.cumsum(axis=1), above.cumsum(axis=1)
    passed_so_far = np.arange(1, length + 1) - flagged_so_far
    warned = {key: np.zeros((lines, length), bool) for key in ("flagged interval", "flagged one answer",
                                                               "body interval", "body one answer")}  # fmt: skip
    for line in range(lines):
        for look in range(length):
            n, k = look + 1, int(flagged_so_far[line, look])
            low, high = interval(k, n)
            warned["flagged interval"][line, look] = not low <= RATE <= high
            warned["flagged one answer"][line, look] = outside(k, lambda c, n=n: interval(c, n), RATE)
            passed, a = int(passed_so_far[line, look]), int(above_so_far[line, look])
            if passed:
                low, high = interval(a, passed)
                warned["body interval"][line, look] = not low <= EXPECTED <= high
                warned["body one answer"][line, look] = outside(a, lambda c, p=passed: interval(c, p), EXPECTED)
    return warned


def first(warned: np.ndarray) -> float:
    """The median answer at which a line first warns (lines that never warn count as after the last)."""
    return float(np.median(np.where(warned.any(axis=1), warned.argmax(axis=1) + 1, warned.shape[1] + 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1000, help="windows of 500 answers per case (default 1000)")
    parser.add_argument("--lines", type=int, default=300, help="lines looked at after every answer (default 300)")
    parser.add_argument("--answers", type=int, default=2000, help="answers per line (default 2000)")
    parser.add_argument("--plot", type=Path, default=Path("docs/drift_warnings.png"))
    args = parser.parse_args()

    print(f"Windows of 500 answers, {args.windows} per case, 3% predicted: the share of windows warned")
    print("| line | flagged share: interval | one answer cannot decide | body: interval | one answer cannot decide |")
    print("| --- | --- | --- | --- | --- |")
    for label, shift, defects in (("calibrated, 2% defects", 0.0, 0.02), ("shift 0.1 sd", 0.1, 0.0),
                                  ("shift 0.2 sd", 0.2, 0.0)):  # fmt: skip
        said = windows(np.random.default_rng(0), shift, defects, args.windows)
        print(f"| {label} | {said['flagged interval']:.1%} | {said['flagged one answer']:.1%} "
              f"| {said['body interval']:.1%} | {said['body one answer']:.1%} |")  # fmt: skip

    print(f"\n{args.lines} lines of {args.answers} answers, looked at after every answer")
    print("| line | rule | lines warned at some look: flagged | body | looks warned: flagged | body "
          "| median first warning (answer): flagged | body |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, (label, shift) in zip(axes, (("calibrated, no defects", 0.0), ("shift 0.2 sd", 0.2)), strict=True):
        warned = looked(np.random.default_rng(1), shift, args.lines, args.answers)
        for rule in ("interval", "one answer"):
            f, b = warned[f"flagged {rule}"], warned[f"body {rule}"]
            print(f"| {label} | {rule} | {f.any(axis=1).mean():.0%} | {b.any(axis=1).mean():.0%} | {f.mean():.1%} "
                  f"| {b.mean():.1%} | {first(f):.0f} | {first(b):.0f} |")  # fmt: skip
            for name, style in (("flagged", "-"), ("body", ":")):
                ever = np.maximum.accumulate(warned[f"{name} {rule}"], axis=1).mean(axis=0)
                axis.plot(np.arange(1, args.answers + 1), ever, style, label=f"{name}: {rule}")
        axis.set_title(label)
        axis.set_xlabel("answers looked at")
        axis.set_xscale("log")
    axes[0].set_ylabel("share of lines warned so far")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(args.plot, dpi=110)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
