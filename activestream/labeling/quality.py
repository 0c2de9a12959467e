"""Label quality, measured: gold accuracy, agreement (Cohen's kappa), rubber-stamp rate.

All functions are pure: they take the queue's answer rows (dicts with ``item_id``,
``labeler``, ``outcome``, ``label``, ``created``, ``lane``, ``gold``, ``top``) and
return plain numbers; ``None`` where there is nothing to measure yet.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence


def cohen_kappa(pairs: Sequence[tuple[int, int]]) -> float | None:
    """Cohen's kappa of two raters over ``pairs`` of (first, second) classes.

    >>> cohen_kappa([(0, 0), (1, 1), (0, 0), (1, 1)])
    1.0
    >>> cohen_kappa([(0, 1), (1, 0)])
    -1.0
    >>> cohen_kappa([(2, 2), (2, 2)]) is None   # chance agreement is 1: kappa undefined
    True
    """
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement_pairs(answers: Sequence[dict]) -> list[tuple[int, int]]:
    """(first, second) classes of items labeled by two different labelers, gold excluded."""
    by_item: dict[str, list[dict]] = defaultdict(list)
    for a in answers:
        if a["outcome"] == "labeled" and a["gold"] is None:
            by_item[a["item_id"]].append(a)
    pairs = []
    for labels in by_item.values():
        if len(labels) >= 2:
            first, second = sorted(labels, key=lambda a: a["created"])[:2]
            pairs.append((first["label"], second["label"]))
    return pairs


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def labeler_quality(answers: Sequence[dict]) -> dict:
    """One labeler's gold accuracy and rubber-stamp rate.

    The rubber-stamp rate is measured on gold items where the model's top guess is
    wrong: the share of them where the labeler gave the model's (wrong) guess.

    >>> rows = [dict(item_id="g1", outcome="labeled", label=1, gold=1, top=[[2, .6]], created=0),
    ...         dict(item_id="g2", outcome="labeled", label=2, gold=1, top=[[2, .7]], created=1)]
    >>> labeler_quality(rows)
    {'gold_answered': 2, 'gold_accuracy': 0.5, 'guess_wrong': 2, 'rubber_stamp_rate': 0.5}
    """
    gold = [a for a in answers if a["outcome"] == "labeled" and a["gold"] is not None]
    correct = sum(a["label"] == a["gold"] for a in gold)
    misled = [a for a in gold if a["top"] and a["top"][0][0] != a["gold"]]
    stamped = sum(a["label"] == a["top"][0][0] for a in misled)
    return {"gold_answered": len(gold), "gold_accuracy": _ratio(correct, len(gold)),
            "guess_wrong": len(misled), "rubber_stamp_rate": _ratio(stamped, len(misled))}


def pace(answers: Sequence[dict], now: float, window: float = 600.0) -> float:
    """Labels per minute over the last ``window`` seconds (since the first of them, at least a minute).

    >>> pace([dict(outcome="labeled", created=t) for t in (0, 30, 60)], now=60)
    3.0
    """
    times = [a["created"] for a in answers if a["outcome"] == "labeled" and a["created"] > now - window]
    if not times:
        return 0.0
    minutes = max(1.0, (now - min(times)) / 60.0)
    return len(times) / minutes


def counts(answers: Sequence[dict]) -> dict[str, int]:
    """How many items a labeler labeled, skipped or marked unsure (gold answers included)."""
    c = Counter(a["outcome"] for a in answers)
    return {"labeled": c["labeled"], "skipped": c["skipped"], "unsure": c["unsure"]}


def quality_report(answers: Sequence[dict], now: float) -> dict:
    """Per-labeler counts, pace and quality, and the agreement across labelers."""
    by_labeler: dict[str, list[dict]] = defaultdict(list)
    for a in answers:
        by_labeler[a["labeler"]].append(a)
    labelers = {name: {**counts(rows), "pace_per_min": pace(rows, now), **labeler_quality(rows)}
                for name, rows in sorted(by_labeler.items())}
    pairs = agreement_pairs(answers)
    return {"labelers": labelers, "agreement": {"items": len(pairs), "kappa": cohen_kappa(pairs)}}
