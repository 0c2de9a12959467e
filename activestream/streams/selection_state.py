"""The selector's learned state, kept in the store across restarts.

The budget's windows are saved as safetensors bytes with each batch's samples (see
:mod:`activestream.storage.checkpoints`), so nothing is ever unpickled. The diversity
filter's memory is not saved apart: it is the embeddings of the latest picks, which
every chosen sample carries in its ``meta``, and a restarted selector rebuilds it from them.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from activestream.errors import InvalidInput
from activestream.selectors import AdaptiveBudget, DiversityFilter
from activestream.selectors.boost import DriftBoost
from activestream.selectors.state import learned_state, restore_state
from activestream.storage.store import Sample

log = logging.getLogger(__name__)


BOOST = "boost/"  # prefix of a DriftBoost's own state beside the budget it wraps


def encode(budget: AdaptiveBudget | DriftBoost) -> bytes:
    state = learned_state(budget.base if isinstance(budget, DriftBoost) else budget)
    if isinstance(budget, DriftBoost):
        state.update({BOOST + k: v for k, v in learned_state(budget).items()})
    return save({k: np.ascontiguousarray(v) for k, v in state.items()})


def decode(data: bytes, budget: AdaptiveBudget | DriftBoost) -> bool:
    """Restore ``budget`` from ``data``; False (and the budget untouched) if it cannot be read.
    A boost saved by a selector without one (or the other way round) is dropped: the
    windows are what must survive."""
    try:
        twin = copy.deepcopy(budget)
        arrays = load(data)
        restore_state(twin.base if isinstance(twin, DriftBoost) else twin,
                      {k: v for k, v in arrays.items() if not k.startswith(BOOST)})
        boost = {k.removeprefix(BOOST): v for k, v in arrays.items() if k.startswith(BOOST)}
        if isinstance(twin, DriftBoost) and boost:
            restore_state(twin, boost)
    except (SafetensorError, InvalidInput, ValueError, TypeError) as e:
        log.error("the selector's saved budget cannot be read (%s); starting with a fresh one", e)
        return False
    budget.__dict__.update(twin.__dict__)
    return True


def pick_meta(embedding: list[float] | None, space: tuple[str, int]) -> dict:
    """What a chosen sample keeps so that the diversity memory can be rebuilt from it."""
    return {} if not embedding else {"embedding": embedding, "space": list(space)}


def rebuild(diversity: DiversityFilter, newest_first: list[Sample], space: tuple[str, int]) -> int:
    """Refill ``diversity`` with the embeddings of the latest picks made in ``space``; returns how many."""
    picks = [s.meta["embedding"] for s in newest_first if s.meta.get("space") == list(space) and s.meta.get("embedding")]
    picks = picks[:diversity.memory][::-1]
    diversity.clear()
    if picks and len({len(p) for p in picks}) == 1:
        diversity.update(np.array(picks, dtype=np.float64), np.ones(len(picks), dtype=bool))
    return len(picks)
