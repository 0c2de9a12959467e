"""What the monitoring tests share: the metric names the exporters export, the queries
of the dashboards and alert rules, and a real Prometheus started on 127.0.0.1."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULES = DEPLOY / "prometheus" / "rules" / "activestream.yml"
#: Names Prometheus itself makes, or the Python client exports in every process.
NATIVE = {"up", "ALERTS"}
NATIVE_PREFIXES = ("process_", "python_")

def exported() -> set[str]:
    """Every sample name the workers' and label serve's exporters can produce."""
    from prometheus_client import REGISTRY

    import activestream.labeling.metrics as label_metrics
    import activestream.streams.metrics  # noqa: F401 - registers the workers' metrics
    from activestream.storage.queue import LabelQueue
    from activestream.storage.store import SampleStore

    queue = LabelQueue(SampleStore("sqlite://"))
    queue.create_schema()
    families = list(REGISTRY.collect()) + list(label_metrics.QueueCollector(queue).collect())
    names = set()
    for family in families:
        names |= {family.name, *_samples(family.name, family.type)}
    return names


def _samples(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


NAME = re.compile(r"(?<![\w:\"'])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers and strings removed first)."""
    bare = re.sub(r"\{[^}]*\}", "", re.sub(r'"[^"]*"', '""', expr))
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    return {n for n in NAME.findall(bare)
            if n.startswith(("activestream_", *NATIVE_PREFIXES)) or n in NATIVE}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every target of every panel."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name} / {panel['title']} / {target.get('refId')}", target.get("expr", "")))
    return found


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def with_bool(expr: str) -> str:
    """An alert expression ``signal OP threshold`` as ``signal OP bool threshold``: the
    same comparison, answering 0 or 1 for every series instead of only those that fire,
    so that evaluating it shows whether the signal exists.

    >>> with_bool('up{job=~"a.*"} == 0')
    'up{job=~"a.*"} == bool 0'
    >>> with_bool('sum(rate(x[5m])) / sum(rate(y[5m])) > 0.01')
    'sum(rate(x[5m])) / sum(rate(y[5m])) > bool 0.01'
    """
    depth, quote, found = 0, False, []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c == '"':
            quote = not quote
        elif not quote and c in "([{":
            depth += 1
        elif not quote and c in ")]}":
            depth -= 1
        elif not quote and depth == 0:
            op = next((o for o in COMPARISONS if expr.startswith(o, i)), None)
            if op:
                found.append((i, op))
                i += len(op)
                continue
        i += 1
    if len(found) != 1 or re.search(r"\b(and|or|unless)\b", re.sub(r"\([^()]*\)", "", expr)):
        raise ValueError(f"alert expression is not one comparison of a signal with a threshold: {expr}")
    at, op = found[0]
    return f"{expr[:at + len(op)]} bool{expr[at + len(op):]}"


# -- a real Prometheus -----------------------------------------------------------------------
def prometheus_binaries() -> tuple[str, str] | None:
    """Debian's prometheus and promtool, installed with `make prometheus` when missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        subprocess.run(["make", "-C", str(ROOT), "prometheus"], capture_output=True, text=True, timeout=600)
    found = shutil.which("prometheus"), shutil.which("promtool")
    return found if all(found) else None


def scrape_config(jobs: dict[str, list[int]], interval: float = 2.0) -> dict:
    """Prometheus's configuration: one job per worker, targets on 127.0.0.1, the repository's rules."""
    return {
        "global": {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": f"activestream-{name}",
                            "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
                           for name, ports in jobs.items()],
    }


class Prometheus:
    """``prometheus`` on 127.0.0.1:``port`` with its data under ``folder``; stopped by PID."""

    def __init__(self, binary: str, folder: Path, config: dict, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = folder / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / "prometheus.log"
        self.argv = [binary, f"--config.file={self.config_path}", f"--web.listen-address=127.0.0.1:{port}",
                     f"--storage.tsdb.path={folder / 'data'}"]
        self.process_: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "Prometheus":
        with open(self.log_path, "ab") as log:
            self.process_ = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process_.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process_.returncode}: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"prometheus not ready after {timeout:.0f} s: {self.log_path.read_text()[-2000:]}")

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body.get('error', r.text)}")
        return body["data"]["result"]

    def get(self, path: str) -> dict:
        return httpx.get(f"{self.url}{path}", timeout=30).json()["data"]

    def stop(self) -> None:
        if self.process_ is not None and self.process_.poll() is None:
            self.process_.send_signal(signal.SIGTERM)
            try:
                self.process_.wait(30)
            except subprocess.TimeoutExpired:
                self.process_.kill()
                self.process_.wait(10)
