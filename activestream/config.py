"""Settings, read once at the edge (environment variables ``ACTIVESTREAM_*``, then flags).

The core never reads the environment: workers and the simulator pass plain values
from this object to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> str | None:
    """``../shared/data`` beside the checkout when it exists (the datasets folder)."""
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(candidate) if candidate.is_dir() else None


class Settings(BaseSettings):
    """Every setting of activestream; each field is also the env var ``ACTIVESTREAM_<NAME>``.

    >>> Settings(budget=0.1).budget
    0.1
    """

    model_config = SettingsConfigDict(env_prefix="ACTIVESTREAM_", frozen=True, extra="forbid")

    # where things live
    home: str = Field("var/activestream", description="folder for the SQLite store, blobs, models and logs")
    store_url: str | None = Field(None, description="SQLAlchemy URL of the sample/label store; default sqlite:///<home>/store.db")
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers host:port[,...]; unset starts the embedded broker")
    broker_session_timeout: float = Field(2.0, description="consumer group session timeout, seconds")

    # topics
    topic_images: str = "images"
    topic_predictions: str = "predictions"
    topic_requests: str = "labeling.requests"
    topic_labels: str = "labels"
    topic_versions: str = "model.versions"
    topic_deadletter: str = "deadletter"
    partitions: int = Field(4, description="partitions of images and predictions (scale-out unit)")
    group_prefix: str = "activestream"

    # model
    model_name: str = "classifier"
    arch: str = Field("small_cnn", description="small_cnn or a torchvision classifier name (resnet18, mobilenet_v3_small ...)")
    device: str = Field("auto", description="auto, cpu or cuda[:N]")
    threads: int = Field(0, description="torch CPU threads; 0 keeps torch's default")

    # predictor
    predictors: int = Field(1, ge=1, description="predictor processes `run` starts; they share the images partitions")
    batch_size: int = Field(256, description="largest micro-batch the predictor consumes, predicts and commits at once")
    forward_chunk: int = Field(64, ge=0, description="images per forward pass on a CPU (a micro-batch runs as several); 0: the whole micro-batch")
    batch_wait_ms: int = Field(20, description="how long a consumer waits to fill a micro-batch")
    max_image_bytes: int = Field(1 << 20, description="encoded images above this size go to deadletter")
    inline_image_max: int = Field(65536, description="images up to this size ride inline in predictions; larger ones by reference")

    # selector
    strategy: str = Field("margin", description="least_confidence, margin, entropy or random")
    budget: float = Field(0.05, gt=0, le=1, description="share of traffic sent to labelers")
    budget_window: int = 1000
    audit_share: float = Field(0.1, ge=0, le=1, description="share of the budget spent on uniformly random audit items")
    budget_cap: int = Field(0, ge=0, description="hard cap on requests per budget window, at least its target; 0: none beyond the budget's band")
    class_quota: float = Field(0.0, ge=0, le=1, description="largest share of a window's target one predicted class may take; 0: no quotas")
    diversity_radius: float = Field(0.0, ge=0, le=2, description="skip near-duplicates of recent picks: cosine distance in the model's embedding space under which an image counts as one (predictions then carry embeddings); 0: off")
    diversity_memory: int = Field(1000, ge=1, description="recent picks the diversity filter compares against")

    @field_validator("strategy")
    @classmethod
    def _one_prediction_strategy(cls, name: str) -> str:
        # The streaming selector sees one probability vector per image: committee and
        # MC-dropout scores (bald ...) need several passes and run in the simulator only.
        from activestream.errors import InvalidInput
        from activestream.selectors import make_selector

        try:
            selector = make_selector(name)
        except InvalidInput as e:
            raise ValueError(str(e)) from e
        if selector.needs_samples:
            raise ValueError(f"strategy {name!r} needs several model passes per image; "
                             "the selector worker takes least_confidence, margin, entropy or random")
        return name
    seed: int = 0

    # learner
    retrain_every: int = Field(150, description="fine-tune after this many new human labels")
    epochs: int = 4
    learning_rate: float = Field(3e-4, description="fine-tuning learning rate (higher rates undo the seed on biased label sets)")
    learner_threads: int = Field(1, description="torch CPU threads of the learner, leaving the other cores to predictors")
    holdout: float = Field(0.2, ge=0, lt=1, description="share of human labels held out for promotion decisions")
    promote_tolerance: float = Field(0.01, description="promote unless held-out accuracy drops by more than this")
    learner_poll: float = Field(1.0, description="seconds between checks for new labels")

    # simulation / demo
    dataset: str = Field("auto", description="fashion-mnist, mnist, usps, digits or auto (fashion-mnist when data_dir has it)")
    data_dir: str | None = Field(default_factory=default_data_dir, description="folder holding the datasets")
    simulate: bool = Field(True, description="run the simulated traffic source and labeler")
    images: int = Field(20000, description="images the simulated source streams")
    rate: float = Field(300.0, description="images per second from the simulated source (0: as fast as possible)")
    seed_size: int = Field(500, description="labeled images the seed model is trained on")
    label_delay: float = Field(0.2, description="seconds the simulated labeler takes per request")
    pace_learner: bool = Field(True, description="the simulated source pauses while a fine-tuning round is due, so a "
                                                 "slow machine shows learning too; off: a fixed rate whatever happens")

    # labeling service
    label_port: int = Field(8090, description="port of `activestream label serve` on 127.0.0.1")
    label_lease_seconds: float = Field(120.0, gt=0, description="how long an item handed to a labeler stays theirs")
    label_studio_user: str = Field("studio", description="the one labeler account Label Studio's ML-backend calls may use (it records labels in Label Studio users' names)")
    label_guesses: Literal["show", "hide", "after"] = Field("after", description="model's top guesses on the page: show, hide, or show after the answer")
    label_gold_share: float = Field(0.05, ge=0, le=1, description="share of hand-outs drawn from gold items (known answers)")
    label_second_share: float = Field(0.05, ge=0, le=1, description="share of requests sent to a second labeler for agreement")
    label_audit_every: int = Field(5, ge=1, description="every n-th item a labeler gets is an audit item when one waits")

    # metrics
    metrics_port: int = Field(0, description="first Prometheus port (predictor; others follow); 0 disables")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:///{Path(self.home).resolve() / 'store.db'}"

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve()

    def group(self, worker: str) -> str:
        return f"{self.group_prefix}.{worker}"

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for worker processes."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            env[f"ACTIVESTREAM_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def worker_env(settings: Settings) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVESTREAM_")}
    # Workers share a few cores with the broker and each other; OpenMP's idle threads
    # would otherwise spin between forward passes on the cores the event loops need.
    keep.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return {**keep, **settings.to_env()}
