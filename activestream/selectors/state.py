"""The learned state of a selector object as named arrays, and back.

Learned state is every public attribute ending in ``_`` (the convention of river and
scikit-learn): ints, floats, arrays, and dicts of int keys to arrays (per-class
histories). A streaming selector saves it with each batch's decisions and restores
it after a restart, so a budget window keeps its count across a SIGKILL.

>>> from activestream.selectors import AdaptiveBudget
>>> import numpy as np
>>> budget = AdaptiveBudget(0.1, window=100)
>>> scores = np.linspace(0, 1, 50)
>>> budget.update(scores, budget.query(scores, [str(i) for i in range(50)]))
>>> again = AdaptiveBudget(0.1, window=100)
>>> restore_state(again, learned_state(budget))
>>> again.seen_, again.spent_ == budget.spent_, again.threshold_ == budget.threshold_
(50, True, True)
"""

from __future__ import annotations

import numpy as np

from activestream.errors import InvalidInput

SEP = "."


def learned_state(obj) -> dict[str, np.ndarray]:
    """``{name: array}`` for every learned attribute of ``obj``; dict entries as ``name.key``."""
    out: dict[str, np.ndarray] = {}
    for name, value in vars(obj).items():
        if name.startswith("_") or not name.endswith("_"):
            continue
        if isinstance(value, dict):
            out.update({f"{name}{SEP}{int(k)}": np.asarray(v) for k, v in value.items()})
        else:
            out[name] = np.asarray(value)
    return out


def restore_state(obj, arrays: dict[str, np.ndarray]) -> None:
    """Set ``obj``'s learned attributes from :func:`learned_state`'s output, each as the type it has now."""
    for name, current in list(vars(obj).items()):
        if name.startswith("_") or not name.endswith("_"):
            continue
        if isinstance(current, dict):
            prefix = f"{name}{SEP}"
            value = {int(k.removeprefix(prefix)): _frozen(v) for k, v in arrays.items() if k.startswith(prefix)}
        elif name not in arrays:
            raise InvalidInput("bad_state", f"saved state lacks {name!r}; it was saved by another kind of object")
        elif isinstance(current, np.ndarray):
            value = _frozen(arrays[name])
        else:
            value = type(current)(arrays[name].item())
        setattr(obj, name, value)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a
