"""The live terminal display and final summary of ``activestream run``."""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

from activestream.pacing import Paced
from activestream.streams.accuracy import by_version


def _acc(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{value:.4f}"


def _interval(e) -> str:
    return "-" if not e.n else f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}] n={e.n}"


def _point(e) -> str:
    return "-" if not e.n else f"{e.value:.3f} n={e.n}"


def _label_free(found: dict | None, calibrated: bool) -> str:
    """CBPE with its interval and ATC; "raw" while no audits calibrate them (the mean confidence)."""
    if not found or not found["cbpe"].n:
        return "-"
    cbpe, atc = found["cbpe"], found["atc"]
    text = f"{cbpe.value:.3f} [{cbpe.low:.3f}, {cbpe.high:.3f}]"
    return text + (f" atc {atc.value:.3f}" if atc.n else "") + ("" if calibrated else " raw")


def _own_source(settings) -> bool:
    """Whether this run streams images itself. With ``--no-simulate`` they come from other
    producers (``activestream source``), which it does not count: a "produced 0" beside
    300 predicted reads as a fault.

    >>> from types import SimpleNamespace
    >>> _own_source(SimpleNamespace(simulate=False)), _own_source(SimpleNamespace(simulate=True))
    (False, True)
    """
    return getattr(settings, "simulate", True) is not False


def _drift(seen, now: float) -> str:
    """The newest drift detection the observer read: detector, signal, version, how long ago
    (``now``: wall-clock seconds), and how many there were; "-" before the first.

    >>> from types import SimpleNamespace as S
    >>> _drift(S(drift=3, drift_latest={"detector": "adwin", "signal": "embedding", "version": 2, "position": 1500,
    ...                                  "ts": 100.0}), now=112.0)
    'adwin on embedding of v2 at image 1500, 12 s ago (3 in all)'
    """
    m = seen.drift_latest
    if not m:
        return "-"
    return (f"{m['detector']} on {m['signal']} of v{m['version']} at image {m['position']}, "
            f"{max(0.0, now - m['ts']):.0f} s ago ({seen.drift} in all)")


def fitted(console: Console, title: str, headers: list[str], rows: list[list[str]]) -> Table:
    """One table with a column per header where the console is wide enough for every cell,
    else a key/value table, a block of lines per row: a narrow terminal wraps values instead
    of cutting them to "…".

    >>> from io import StringIO
    >>> narrow = Console(file=StringIO(), width=60, record=True)
    >>> row = ["2", "promoted", "0.801 [0.780, 0.820] n=1200", "0.912 [0.901, 0.923] n=4000"]
    >>> narrow.print(fitted(narrow, "versions", ["version", "status", "audit acc (95% CI)",
    ...                                          "label-free acc (CBPE, ATC)"], [row]))
    >>> lines = narrow.export_text().splitlines()
    >>> [line.split() for line in lines if "label-free" in line]
    [['label-free', 'acc', '(CBPE,', 'ATC)', '0.912', '[0.901,', '0.923]', 'n=4000']]
    """
    wide = Table(title=title)
    for header in headers:
        wide.add_column(header, justify="right")
    for row in rows:
        wide.add_row(*row)
    # Measured without the console's limit, which would cap it at the console's width.
    if console.measure(wide, options=console.options.update_width(1 << 20)).maximum <= console.width:
        return wide
    # One table for every row, so the keys line up; a blank line starts each row.
    narrow = Table(title=title, show_header=False, box=None, padding=(0, 1))
    narrow.add_column(style="bold", overflow="fold")
    narrow.add_column(overflow="fold")
    for i, row in enumerate(rows):
        if i:
            narrow.add_row("", "")
        for header, value in zip(headers, row):
            narrow.add_row(header, value)
    return narrow


SUMMARY_TITLE = ("model versions (accuracy on live traffic: audit labels, all labels weighted by 1/selection "
                 "probability, the naive mean over every label, and label-free from the confidences of the last "
                 "4,000 predictions calibrated on audits)")
SUMMARY_HEADERS = ["version", "parent", "status", "trained on", "predictions served", "holdout acc", "test acc",
                   "audit acc (95% CI)", "ipw acc", "naive acc", "label-free acc (CBPE, ATC)"]


class Display:
    def __init__(self, console: Console | None = None, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.console = console or Console()
        self.interval = interval
        self.clock = clock  # paces the store reads behind the audit columns
        self._live: Live | None = None
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        self._printed = 0.0
        self._columns: Paced[tuple[str, str]] | None = None  # the audit and label-free columns
        self.restarts = 0

    def __enter__(self) -> "Display":
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.__exit__(*exc)

    def update(self, settings, res, seen, demo) -> None:
        now = time.monotonic()
        t0, n0 = self._last
        if now - t0 >= 1.0:
            self._rate = (seen.predictions - n0) / (now - t0)
            self._last = (now, seen.predictions)
        serving = seen.announced[-1] if seen.announced else {}
        row = {
            **({"produced": len(demo.produced)} if _own_source(settings) else {}),
            "predicted": len(seen.predicted),
            "images/s": f"{self._rate:.0f}" + (" (source paused: a fine-tuning round is due)"
                                               if getattr(demo, "paused", False) else ""),
            "selected": len(seen.requested),
            "share": f"{len(seen.requested) / max(1, len(seen.predicted)):.3f} (budget {settings.budget})",
            # Versions, not announcements: a rollback or a restart announces an old one again.
            "labels": len(seen.labels), "versions": len({m["version"] for m in seen.announced}),
            "serving": f"v{serving.get('version', '-')}",
            "test acc": _acc(serving.get("metrics", {}), "test_accuracy"),
            **dict(zip(("audit acc (95% CI)", "label-free acc (CBPE, ATC)"), self._audit(res, seen))),
            "drift": _drift(seen, time.time()),
            "deadletter": sum(seen.dead.values()),
        }
        if self.restarts:
            row["restarts"] = self.restarts
        if self._live:
            self._live.update(fitted(self.console, "activestream", list(row), [[str(v) for v in row.values()]]))
        elif now - self._printed >= self.interval:
            self._printed = now
            self.console.print(" | ".join(f"{k} {v}" for k, v in row.items()))

    def say(self, text: str) -> None:
        """Print a plain line above the live table (paths and tokens: no markup)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def note(self, event: str) -> None:
        """Show a supervisor's event (a worker exited, was restarted) above the live table."""
        self.restarts += " restarted " in event
        self.console.print(f"[yellow]{event}[/yellow]")

    def _audit(self, res, seen) -> tuple[str, str]:
        """The newest version's audit-label and label-free accuracy, refreshed every few seconds
        (store queries, paced as the store grows)."""
        if self._columns is None:
            self._columns = Paced(lambda: self._read_audit(res, seen), every=self.interval, clock=self.clock)
        return self._columns.get()

    def _read_audit(self, res, seen) -> tuple[str, str]:
        versions = by_version(res.store.outcomes())
        text = "-"
        if versions:
            version, est = max(versions.items())
            text = f"v{version} {_interval(est['audit'])}"
        free = seen.label_free.refresh(res.store, force=True)
        newest = max(free) if free else None
        return text, "-" if newest is None else f"v{newest} {_label_free(free[newest], seen.label_free.calibrated())}"

    def summary(self, settings, seen, demo, registry, store) -> None:
        live = by_version(store.outcomes())
        free = seen.label_free.refresh(store, force=True)
        rows = []
        for meta in registry.versions(settings.model_name):
            est = live.get(meta.version)
            rows.append([str(meta.version), str(meta.parent or "-"), meta.status, str(meta.train_size),
                         str(seen.versions_served.get(meta.version, 0)),
                         _acc(meta.metrics, "holdout_accuracy"), _acc(meta.metrics, "test_accuracy"),
                         *((_interval(est["audit"]), _point(est["ipw"]), _point(est["naive"])) if est
                           else ("-", "-", "-")), _label_free(free.get(meta.version), seen.label_free.calibrated())])
        self.console.print(fitted(self.console, SUMMARY_TITLE, SUMMARY_HEADERS, rows))
        served = sorted(v for v, n in seen.versions_served.items() if n)
        self.console.print(
            (f"images {len(demo.produced)}, " if _own_source(settings) else "")
            + f"predicted {len(seen.predicted)}, selected {len(seen.requested)} "
            f"({len(seen.requested) / max(1, len(seen.predicted)):.3%} of traffic, budget {settings.budget:.1%}), "
            f"labels {len(seen.labels)}, dead-lettered {sum(seen.dead.values())}, "
            f"versions announced {len(seen.announced)}, versions served {served}, "
            f"drift detections {seen.drift}"
        )
        if seen.drift_latest:
            self.console.print(f"latest drift detection: {_drift(seen, time.time())}")
