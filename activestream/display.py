"""The live terminal display and final summary of ``activestream run``."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from activestream.streams.accuracy import by_version


def _acc(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{value:.4f}"


def _interval(e) -> str:
    return "-" if not e.n else f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}] n={e.n}"


def _point(e) -> str:
    return "-" if not e.n else f"{e.value:.3f} n={e.n}"


class Display:
    def __init__(self, console: Console | None = None, interval: float = 5.0):
        self.console = console or Console()
        self.interval = interval
        self._live: Live | None = None
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        self._printed = 0.0
        self._estimated = (0.0, "-")

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
            "produced": len(demo.produced), "predicted": len(seen.predicted), "images/s": f"{self._rate:.0f}",
            "selected": len(seen.requested),
            "share": f"{len(seen.requested) / max(1, len(seen.predicted)):.3f} (budget {settings.budget})",
            "labels": len(seen.labels), "versions": len(seen.announced),
            "serving": f"v{serving.get('version', '-')}",
            "test acc": _acc(serving.get("metrics", {}), "test_accuracy"),
            "audit acc (95% CI)": self._audit(res, now),
            "deadletter": sum(seen.dead.values()),
        }
        if self._live:
            self._live.update(self._table(row))
        elif now - self._printed >= self.interval:
            self._printed = now
            self.console.print(" | ".join(f"{k} {v}" for k, v in row.items()))

    def _audit(self, res, now: float) -> str:
        """The newest version's audit-label accuracy, refreshed every few seconds (a store query)."""
        if now - self._estimated[0] >= self.interval:
            versions = by_version(res.store.outcomes())
            text = "-"
            if versions:
                version, est = max(versions.items())
                text = f"v{version} {_interval(est['audit'])}"
            self._estimated = (now, text)
        return self._estimated[1]

    @staticmethod
    def _table(row: dict) -> Table:
        table = Table(title="activestream", show_header=True)
        for key in row:
            table.add_column(key, justify="right")
        table.add_row(*(str(v) for v in row.values()))
        return table

    def summary(self, settings, seen, demo, registry, store) -> None:
        table = Table(title="model versions (accuracy on live traffic: audit labels, all labels weighted by "
                            "1/selection probability, and the naive mean over every label)")
        for col in ("version", "parent", "status", "labels", "predictions served", "holdout acc", "test acc",
                    "audit acc (95% CI)", "ipw acc", "naive acc"):
            table.add_column(col, justify="right")
        live = by_version(store.outcomes())
        for meta in registry.versions(settings.model_name):
            est = live.get(meta.version)
            table.add_row(str(meta.version), str(meta.parent or "-"), meta.status, str(meta.train_size),
                          str(seen.versions_served.get(meta.version, 0)),
                          _acc(meta.metrics, "holdout_accuracy"), _acc(meta.metrics, "test_accuracy"),
                          *((_interval(est["audit"]), _point(est["ipw"]), _point(est["naive"])) if est
                            else ("-", "-", "-")))
        self.console.print(table)
        served = sorted(v for v, n in seen.versions_served.items() if n)
        self.console.print(
            f"images {len(demo.produced)}, predicted {len(seen.predicted)}, selected {len(seen.requested)} "
            f"({len(seen.requested) / max(1, len(seen.predicted)):.3%} of traffic, budget {settings.budget:.1%}), "
            f"labels {len(seen.labels)}, dead-lettered {sum(seen.dead.values())}, "
            f"versions announced {len(seen.announced)}, versions served {served}"
        )
