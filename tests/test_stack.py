"""The production stack, validated without a Docker engine: the compose file against the
Compose specification's JSON schema (tests/data/compose-spec.json), pinned images, the
whole stack present, and an image that installs from the constraints file."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.monitoring import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification(compose):
    import jsonschema

    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_pins_every_image_and_holds_the_whole_stack(compose):
    services = compose["services"]
    for name, service in services.items():
        image = service.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned to a version"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "Kafka runs in KRaft mode"
    assert services["postgres"]["image"].startswith("postgres:")
    assert "minio" in services["minio"]["image"]
    assert services["predictor"]["deploy"]["replicas"] > 1, "several predictors"
    for worker, command in {"predictor": ["worker", "predictor"], "selector": ["worker", "selector"],
                            "ingest": ["worker", "ingest"], "learner": ["worker", "learner"],
                            "label": ["label", "serve"]}.items():
        assert services[worker]["command"] == command
        assert services[worker]["build"]["dockerfile"] == "deploy/Dockerfile"
    mounts = {m.split(":")[0]: m.split(":")[1] for s in ("prometheus", "grafana") for m in services[s]["volumes"]}
    for source, target in mounts.items():
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), f"{source} is mounted at {target} but is not in deploy/"
    assert mounts["./prometheus/rules"] == "/etc/prometheus/rules"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_dockerfile_installs_from_the_constraints_file():
    text = DOCKERFILE.read_text()
    installs = re.findall(r"pip install[^\n&]*", text)
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M), "base image pinned to a Python 3.11 release"
    assert re.search(r"^USER (?!root)", text, re.M), "the service does not run as root"
