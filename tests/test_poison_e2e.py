"""Malformed messages interleaved with valid ones: each reaches deadletter with its
reason, each valid image is predicted, and no worker dies or restarts."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import numpy as np
import pytest

from activestream.learners.preprocess import encode_png
from activestream.simulation.traffic import stream_items
from activestream.streams.demo import image_message
from tests.conftest import Harness, make_settings, run_async

pytestmark = pytest.mark.kafka


def _img(image: bytes | str, **fields) -> bytes:
    data = image if isinstance(image, str) else base64.b64encode(image).decode()
    return json.dumps({"v": 1, "id": "p-x", "image": data, **fields}).encode()


def poison_images(rng: np.random.Generator) -> dict[str, bytes | None]:
    """One malformed ``images`` value per kind (the dead-letter reason expected)."""
    rgb = encode_png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    big = encode_png(rng.integers(0, 255, (8, 8), dtype=np.uint8)) + rng.bytes(5000)
    return {
        "bad_json": b"\x00\xff{not json",
        "bad_envelope": b"[1, 2, 3]",
        "bad_version": json.dumps({"v": 7, "id": "p-x", "image": "AAAA"}).encode(),
        "empty": None,
        "bad_base64": _img("!!!not*base64!!!"),
        "corrupt_image": _img(rng.bytes(300)),
        # a header claiming 30000x30000 pixels (900 MB decoded) in a small file
        "too_many_pixels": _img(rgb[:16] + struct.pack(">II", 30000, 30000) + rgb[24:]),
        "too_large": _img(big),
        "unsupported_uri": json.dumps({"v": 1, "id": "p-x", "uri": "ftp://example.com/x.png"}).encode(),
    }


def poison_labels() -> dict[str, bytes]:
    return {
        "unknown_class": json.dumps({"v": 1, "id": "p-x", "label": 42, "labeler": "ann"}).encode(),
        "bad_envelope": json.dumps({"v": 1, "id": "p-x", "label": -1, "labeler": "ann"}).encode(),
    }


def test_poison_goes_to_deadletter_and_valid_images_are_predicted(tmp_path, digits):
    settings = make_settings(tmp_path, dataset="digits", max_image_bytes=4096, retrain_every=10_000)
    run_async(_poison(settings, digits), timeout=300)


async def _poison(settings, digits) -> None:
    rng = np.random.default_rng(1)
    images, labels = poison_images(rng), poison_labels()
    async with Harness(settings, digits) as h:
        s = h.settings
        pids = {name: p.pid for name, p in h.cluster.procs_.items()}
        valid = list(stream_items(digits, h.stream_idx, 1000))
        expected, futures = {}, []
        for n, item in enumerate(valid):
            futures.append(("valid", await h.send(s.topic_images, image_message(item), item.id.encode())))
            kind, value = list(images.items())[n % len(images)]
            futures.append((("images", kind), await h.send(s.topic_images, value, b"p-x")))
            if n % 5 == 0:
                kind, value = list(labels.items())[n // 5 % len(labels)]
                futures.append((("labels", kind), await h.send(s.topic_labels, value, b"p-x")))
        for tag, fut in futures:
            meta = await fut
            if tag != "valid":
                expected[(meta.topic, meta.partition, meta.offset)] = tag[1]
        assert len(expected) >= 1000 and len(set(expected.values())) >= 6

        def dead_by_source() -> dict:
            return {(d["topic"], d["partition"], d["offset"]): d for d in h.observer.seen.dead_records}

        ids = {item.id for item in valid}
        await h.wait_for(lambda: ids <= h.observer.seen.predicted.keys(), 180, "every valid image predicted")
        await h.wait_for(lambda: expected.keys() <= dead_by_source().keys(), 60, "every malformed message dead-lettered")

        dead = dead_by_source()
        wrong = {k: (kind, dead[k]["error_kind"]) for k, kind in expected.items() if dead[k]["error_kind"] != kind}
        assert not wrong, f"dead-letter reasons differ from the malformation: {list(wrong.items())[:5]}"
        assert all(dead[k]["error"] for k in expected), "every dead letter says why"
        assert h.cluster.alive() == {name: True for name in pids}
        assert {name: p.pid for name, p in h.cluster.procs_.items()} == pids
        for name in pids:
            log = (h.cluster.logs / f"{name}.log").read_text()
            assert "Crashed" not in log and "Traceback" not in log, f"{name} log shows a crash:\n{log[-2000:]}"
