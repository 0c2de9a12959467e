"""Settings, read once at the edge (environment variables ``ACTIVESTREAM_*``, then flags).

The core never reads the environment: workers and the simulator pass plain values
from this object to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from activestream.selectors import ONE_PASS_SELECTORS, SELECTORS

if TYPE_CHECKING:
    from activestream.storage.blobs import BlobStore
    from activestream.storage.registry import ModelRegistry


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
    broker_wait: float = Field(10.0, gt=0, description="seconds a command waits for the bootstrap broker to accept a "
                                                       "connection before it gives up")
    storage_url: str | None = Field(None, description="where blobs and models live: s3://bucket/prefix (shared by every "
                                                      "machine; endpoint and credentials from AWS_*), or a folder; "
                                                      "default <home>")

    # images by reference
    fetch_roots: str = Field("", description="comma-separated folders file:// image URIs may point into; empty: none")
    fetch_hosts: str = Field("", description="comma-separated hosts (host or host:port) http(s):// image URIs may "
                                             "name; empty: none")
    fetch_buckets: str = Field("", description="comma-separated buckets (bucket, or bucket/prefix/) s3:// image URIs "
                                               "may name; empty: none")
    fetch_timeout: float = Field(10.0, gt=0, description="seconds one image fetch may take, all of it")
    fetch_concurrency: int = Field(16, ge=1, description="fetches one worker runs at once")

    # topics
    topic_images: str = "images"
    topic_predictions: str = "predictions"
    topic_requests: str = "labeling.requests"
    topic_labels: str = "labels"
    topic_versions: str = "model.versions"
    topic_deadletter: str = "deadletter"
    topic_drift: str = Field("drift", description="drift detections (the selector's monitor), read by the learner")
    partitions: int = Field(4, description="partitions of images and predictions (scale-out unit)")
    group_prefix: str = "activestream"

    # model
    model_name: str = "classifier"
    arch: str = Field("small_cnn", description="small_cnn or a torchvision classifier name (resnet18, mobilenet_v3_small ...)")
    device: str = Field("auto", description="auto, cpu or cuda[:N]")
    threads: int = Field(0, description="torch CPU threads; 0 keeps torch's default")
    model_key_file: str | None = Field(None, description="file holding the key that signs model metadata (HMAC-SHA256); "
                                                       "unset: metadata is checksummed, not signed")
    model_key: SecretStr | None = Field(None, description="the signing key itself, when a file cannot be mounted")

    # predictor
    predictors: int = Field(1, ge=1, description="predictor processes `run` starts; they share the images partitions")
    selectors: int = Field(1, ge=1, description="selector processes `run` starts; they share the predictions partitions, each with its own budget over its share of the traffic")
    ingesters: int = Field(1, ge=1, description="label ingest processes `run` starts; they share the labels partitions")
    label_partitions: int = Field(1, ge=1, description="partitions of labels (ingest's scale-out unit; 1 keeps their order total)")
    batch_size: int = Field(256, description="largest micro-batch the predictor consumes, predicts and commits at once")
    forward_chunk: int = Field(64, ge=0, description="images per forward pass on a CPU (a micro-batch runs as several); 0: the whole micro-batch")
    batch_wait_ms: int = Field(20, description="how long a consumer waits to fill a micro-batch")
    max_image_bytes: int = Field(1 << 20, description="encoded images above this size go to deadletter")
    max_pixels: int = Field(25_000_000, gt=0, description="images whose header claims more pixels than this go to deadletter undecoded")
    inline_image_max: int = Field(65536, description="images up to this size ride inline in predictions; larger ones by reference")

    # selector
    strategy: str = Field("margin", description="uncertainty score: " + ", ".join(ONE_PASS_SELECTORS))
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
        if name not in ONE_PASS_SELECTORS:
            what = (f"strategy {name!r} needs several model passes per image (only simulate and compare run it)"
                    if name in SELECTORS else f"unknown selector {name!r}")
            raise ValueError(f"{what}; use one of: {', '.join(ONE_PASS_SELECTORS)}")
        return name
    seed: int = 0

    # drift
    drift_detectors: str = Field("adwin,page_hinkley,kswin", description="river detectors on each serving version's confidence, class mix, embeddings (when predictions carry them) and audit errors (comma-separated); none: no drift detection")
    drift_run_length: float = Field(500_000.0, gt=1, description="images between false alarms the detectors' thresholds aim at, all detectors together")
    drift_budget_factor: float = Field(3.0, ge=1, description="after a detection the budget is multiplied by this (extra requests carry reason drift); 1: no boost")
    drift_budget_images: int = Field(2000, ge=0, description="images a drift boost lasts; 0: no boost")
    drift_early_labels: int = Field(30, ge=0, description="after a detection the learner trains once this many new human labels are in, instead of retrain_every; 0: no early round")

    @field_validator("drift_detectors")
    @classmethod
    def _drift_detectors(cls, spec: str) -> str:
        from activestream.drift import parse_detectors
        from activestream.errors import ConfigError

        try:
            parse_detectors(spec)
        except ConfigError as e:
            raise ValueError(str(e)) from e
        return spec

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
    images_from: str | None = Field(None, description="`run` streams these images instead of the demo dataset: a folder "
                                                      "(read recursively) or s3://bucket/prefix; in ImageFolder layout "
                                                      "the simulated labeler answers from the sub-folder names")
    images_by: Literal["value", "reference"] = Field("value", description="how images_from travels: value (bytes in "
                                                                          "each message) or reference (file:// or s3:// URIs)")
    label_serve: bool = Field(False, description="`run` also starts `activestream label serve`")
    labelers: Literal["simulated", "people", "both"] = Field(
        "simulated", description="who answers the demo's labeling requests: the simulated labeler, people on the "
                                 "labeling page (which `run` then starts, with a token printed), or both")
    images: int = Field(20000, description="images the simulated source streams")
    rate: float = Field(300.0, description="images per second from the simulated source (0: as fast as possible)")
    seed_size: int = Field(500, description="labeled images the seed model is trained on")
    label_delay: float = Field(0.2, description="seconds the simulated labeler waits before it answers each batch "
                                                "of requests it reads at once (one wait per batch, not per request)")
    pace_learner: bool = Field(True, description="the simulated source pauses while a fine-tuning round is due, so a "
                                                 "slow machine shows learning too; off: a fixed rate whatever happens")

    # labeling service
    label_host: str = Field("127.0.0.1", description="address `activestream label serve` binds; anything but loopback needs a TLS proxy in front")
    label_port: int = Field(8090, description="port of `activestream label serve`")
    label_lease_seconds: float = Field(120.0, gt=0, description="how long an item handed to a labeler stays theirs")
    label_studio_user: str = Field("studio", description="the one labeler account Label Studio's ML-backend calls may use (it records labels in Label Studio users' names)")
    label_guesses: Literal["show", "hide", "after"] = Field("after", description="model's top guesses on the page: show, hide, or show after the answer")
    label_gold_share: float = Field(0.05, ge=0, le=1, description="share of hand-outs drawn from gold items (known answers)")
    label_second_share: float = Field(0.05, ge=0, le=1, description="share of requests sent to a second labeler for agreement")
    label_audit_every: int = Field(5, ge=1, description="every n-th item a labeler gets is an audit item when one waits")
    label_max_body_bytes: int = Field(65536, ge=1, description="largest request body of the labelers' API; larger ones are refused with 413 unread")
    label_studio_max_body_bytes: int = Field(32 << 20, ge=1, description="largest request body of the Label Studio ML backend (its tasks carry images inline)")
    label_signin_failures: int = Field(10, ge=1, description="wrong tokens one client address may send in a burst before it gets 429")
    label_signin_window: float = Field(60.0, gt=0, description="seconds in which a client address earns back all of its label_signin_failures")
    label_trusted_proxies: str = Field("", description="comma-separated addresses of reverse proxies whose X-Forwarded-For names the client; empty: none")
    label_studio_urls: str = Field("", description="comma-separated base URLs of the Label Studio instances the ML backend may talk to (e.g. http://127.0.0.1:8080)")

    @field_validator("fetch_roots", "fetch_hosts", "fetch_buckets")
    @classmethod
    def _fetch_policy(cls, value: str, info) -> str:
        from activestream.errors import ConfigError
        from activestream.storage.fetch import FetchPolicy

        try:  # a relative root or a URL given as a host or bucket fails at startup, not at the first image
            FetchPolicy.parse(**{info.field_name.removeprefix("fetch_"): value})
        except ConfigError as e:
            raise ValueError(str(e)) from e
        return value

    @field_validator("label_studio_urls")
    @classmethod
    def _label_studio_urls(cls, urls: str) -> str:
        from activestream.errors import ConfigError
        from activestream.labeling.studio_client import studio_urls

        try:
            studio_urls(urls)  # a typo fails at startup, not at Label Studio's first call
        except ConfigError as e:
            raise ValueError(str(e)) from e
        return urls

    # metrics
    metrics_port: int = Field(0, description="first port of the workers' /metrics, /healthz and /readyz (predictor; others follow); 0 disables")
    metrics_host: str = Field("127.0.0.1", description="address the workers' metrics and health endpoints bind")
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
            if isinstance(value, SecretStr):  # str() of a SecretStr is a mask, not the secret
                value = value.get_secret_value()
            env[f"ACTIVESTREAM_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def worker_env(settings: Settings) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVESTREAM_")}
    # Workers share a few cores with the broker and each other; OpenMP's idle threads
    # would otherwise spin between forward passes on the cores the event loops need.
    keep.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return {**keep, **settings.to_env()}


def model_key(settings: Settings) -> bytes | None:
    """The key that signs model metadata, from its file or the setting; None when neither is set."""
    from activestream.errors import ConfigError

    if settings.model_key_file and settings.model_key:
        raise ConfigError("both ACTIVESTREAM_MODEL_KEY_FILE and ACTIVESTREAM_MODEL_KEY are set; keep one")
    if settings.model_key is not None:
        key = settings.model_key.get_secret_value().encode()
    elif settings.model_key_file:
        try:
            key = Path(settings.model_key_file).read_bytes().strip()  # an editor's final newline is no part of it
        except OSError as e:
            raise ConfigError(f"cannot read the model key file ({e}); fix ACTIVESTREAM_MODEL_KEY_FILE") from e
    else:
        return None
    if len(key) < 16:
        raise ConfigError(f"the model key has {len(key)} bytes; use at least 16 random ones "
                          "(e.g. `openssl rand -hex 32 > model.key`)")
    return key


def storage_root(settings: Settings, part: str) -> str:
    """Where ``part`` (``blobs`` or ``models``) lives: under ``storage_url`` when set, else under home.

    >>> storage_root(Settings(storage_url="s3://shared/loop1/"), "models")
    's3://shared/loop1/models'
    """
    base = settings.storage_url or str(settings.home_path)
    return f"{base.rstrip('/')}/{part}"


def registry_from(settings: Settings) -> ModelRegistry:
    """The model registry (under ``storage_url`` or home), holding the key that signs its metadata."""
    from activestream.storage.registry import ModelRegistry

    root = storage_root(settings, "models") if settings.storage_url else settings.home_path / "models"
    return ModelRegistry(root, key=model_key(settings))


def blobs_from(settings: Settings) -> BlobStore:
    """The blob store (under ``storage_url`` or home)."""
    from activestream.storage.blobs import BlobStore

    return BlobStore(storage_root(settings, "blobs") if settings.storage_url else settings.home_path / "blobs")
