"""Images by reference and shared storage, end to end: the embedded broker, every worker and
``label serve`` as processes, blobs and models in a bucket on a real S3-compatible server
(moto on 127.0.0.1).

Images arrive inline (small, and over the inline limit), by ``file://`` under the fetch
root and by ``s3://``: digits at their own 8x8, and the same digits dressed as camera
frames of every size from 17x23 to 1024x768, grey, RGB, RGBA, palette, CMYK JPEG and
EXIF-turned JPEG, each mode by each transport. All are predicted, and all are selected
(budget 1.0). A missing key, a path outside the roots, a host not allowed and a key
outside the allowed bucket prefix (the models beside the images) are dead-lettered with
their reasons. Every pick, the large ones included, is in the Label
Studio export with its image, is labeled through ``label serve``'s HTTP API, and the
learner's next round trains on every label.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import subprocess
import sys
import zlib

import httpx
import pytest
from PIL import Image, ImageOps
from image_makers import ENCODINGS, SIZES, enlarged, suffix
from s3_server import s3, s3_endpoint  # noqa: F401 - fixtures

from conftest import Harness, make_settings, run_async
from activestream.config import blobs_from, worker_env
from activestream.labeling.service import LabelingService, MemorySink
from activestream.labeling.studio_io import export_tasks
from activestream.labeling.studio_tasks import ID_FIELD, image_from_uri
from activestream.learners.models import ModelSpec
from activestream.simulation.traffic import stream_items
from activestream.streams.broker import free_port
from activestream.streams.learner import Learner
from activestream.streams.messages import ImageV1
from activestream.streams.worker import WORKERS

pytestmark = pytest.mark.kafka

INLINE_MAX = 400  # base64 characters: a digits PNG (about 120) rides inline, a padded one (about 2,800) does not
PER_KIND = 2
PLAIN = ("inline", "large", "file", "s3")  # digits PNGs as they come; "large": inline, over the limit
TRANSPORTS = ("inline", "file", "s3")
MODES = ("grey PNG", "RGB PNG", "RGBA PNG", "palette PNG", "CMYK JPEG", "EXIF-turned JPEG")
GOOD = len(PLAIN) * PER_KIND + len(TRANSPORTS) * len(MODES)  # every image sent that must be predicted
PERSON = "ann"


def padded(png: bytes, size: int = 2000) -> bytes:
    """The same PNG, larger: a tEXt chunk (ancillary, never decoded) inserted before IDAT."""
    body = b"Comment\x00" + b"x" * size
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    at = png.index(b"IDAT") - 4
    return png[:at] + chunk + png[at:]


def create_token(settings, name: str) -> str:
    done = subprocess.run([sys.executable, "-m", "activestream", "label", "token", "create", name],
                          env=worker_env(settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_images_by_reference_are_predicted_and_every_pick_is_labeled_and_trained_on(tmp_path, digits, s3):
    roots = tmp_path / "images"
    (roots / "cam").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(b"never read")
    settings = make_settings(
        tmp_path, dataset="digits", storage_url=s3.url("loop"), fetch_roots=str(roots), inline_image_max=INLINE_MAX,
        fetch_buckets=f"{s3.name}/cam/",  # not the blob store and models beside them in the bucket
        budget=1.0, audit_share=0.0, retrain_every=GOOD, epochs=1, label_port=free_port(),
        label_second_share=0.0, label_gold_share=0.0, label_guesses="show")
    token = create_token(settings, PERSON)
    run_async(_loop(settings, digits, s3, roots, tmp_path, token), timeout=900)


def _traffic(digits, stream_idx, s3, roots, tmp_path) -> tuple[dict, dict, dict, list]:
    """The images to send: id -> (message, truth), the bytes each id must be labeled on, the
    bad references with the reason each must be dead-lettered for, and the large images."""
    items = list(stream_items(digits, stream_idx, GOOD))  # the n-th is digits.train_x[stream_idx[n]]
    good, data, large = {}, {}, []

    def add(image_id: str, transport: str, encoded: bytes, truth: int) -> None:
        ref = _place(transport, image_id, encoded, roots, s3)
        inline = None if ref else base64.b64encode(encoded).decode()
        good[image_id] = (ImageV1(v=1, id=image_id, image=inline, uri=ref).encode(), truth)
        data[image_id] = encoded

    for n in range(len(PLAIN) * PER_KIND):
        item, kind = items[n], PLAIN[n % len(PLAIN)]
        add(f"{kind}-{n}", "inline" if kind == "large" else kind, padded(item.png) if kind == "large" else item.png,
            item.truth)
        large += [f"{kind}-{n}"] if kind == "large" else []
    for t, transport in enumerate(TRANSPORTS):
        for m, mode in enumerate(MODES):  # every transport carries every size and every mode
            n = len(PLAIN) * PER_KIND + t * len(MODES) + m
            width, height = SIZES[(t + m) % len(SIZES)]
            image_id = f"{transport}-{width}x{height}-{mode.lower().replace(' ', '-')}"
            pixels = digits.train_x[int(stream_idx[n])]
            add(image_id, transport, ENCODINGS[mode](enlarged(pixels, width, height)), items[n].truth)
            large += [image_id] if (width, height) == SIZES[-1] else []
    bad = {"missing": (s3.url("cam/none.png"), "image_not_found"),
           "outside": (f"file://{roots}/../elsewhere/x.png", "outside_roots"),
           "stranger": ("http://images.example.com/x.png", "host_not_allowed"),
           "models": (s3.url("loop/models/"), "bucket_not_allowed")}
    return good, data, bad, large


def _place(transport: str, image_id: str, encoded: bytes, roots, s3) -> str | None:
    """Put the image where ``transport`` finds it and return its ``uri`` (None: it rides inline)."""
    name = image_id + suffix(encoded)
    if transport == "file":
        (roots / "cam" / name).write_bytes(encoded)
        return f"file://{roots}/cam/{name}"
    if transport == "s3":
        s3.client.put_object(Bucket=s3.name, Key=f"cam/{name}", Body=encoded)
        return s3.url(f"cam/{name}")
    return None


async def _loop(settings, digits, s3, roots, tmp_path, token) -> None:
    async with Harness(settings, digits, workers=WORKERS + ("label",)) as h:
        s = h.settings
        good, sent, bad, large = _traffic(digits, h.stream_idx, s3, roots, tmp_path)
        assert len(good) == GOOD and {i.split("-")[0] for i in large if "1024x768" in i} == set(TRANSPORTS)
        assert all(len(base64.b64encode(sent[i])) > INLINE_MAX for i in large)
        for image_id, (value, _) in good.items():
            await h.send(s.topic_images, value, image_id.encode())
        for image_id, (ref, _) in bad.items():
            await h.send(s.topic_images, ImageV1(v=1, id=image_id, uri=ref).encode(), image_id.encode())

        seen = h.observer.seen
        await h.wait_for(lambda: good.keys() <= seen.predicted.keys(), 300, "every good image predicted")
        dead = lambda: {d["key"]: d for d in seen.dead_records if d["topic"] == s.topic_images}  # noqa: E731
        await h.wait_for(lambda: bad.keys() <= dead().keys(), 120, "every bad reference dead-lettered")
        reasons = {k: d["error_kind"] for k, d in dead().items() if k in bad}
        assert reasons == {i: kind for i, (_, kind) in bad.items()}, reasons
        assert not set(bad) & seen.predicted.keys()
        await h.wait_for(lambda: good.keys() <= seen.requested.keys(), 120, "every good image requested")

        await _check_label_studio_export(h, set(good), sent)
        labeled = await _label_over_http(s, token, {i: truth for i, (_, truth) in good.items()}, sent)
        assert labeled == set(good)
        await h.wait_for(lambda: len(h.res.registry.versions(s.model_name)) >= 2, 600, "the learner's next round")
        await _check_training_set(h, good, large)


def shown(data: bytes) -> tuple[tuple[int, int], bytes]:
    """What a person sees of an image: its upright size and RGB pixels."""
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im)
        return upright.size, upright.convert("RGB").tobytes()


async def _check_label_studio_export(h: Harness, ids: set[str], sent: dict[str, bytes]) -> None:
    """Once label serve has queued every request, the Label Studio export carries every image,
    as a PNG that shows what was sent."""
    service = LabelingService.open(h.settings, MemorySink())
    try:
        pending = lambda: {item.id for item in service.pending(100)}  # noqa: E731
        await h.wait_for(lambda: ids <= pending(), 180, "every request queued by label serve")
        tasks = await asyncio.to_thread(export_tasks, service)
        images = {task["data"][ID_FIELD]: image_from_uri(task["data"]["image"]) for task in tasks}
        assert images.keys() == ids
        for i in ids:
            assert images[i].startswith(b"\x89PNG") and shown(images[i]) == shown(sent[i]), i
    finally:
        service.close()


async def _label_over_http(s, token: str, truth: dict[str, int], sent: dict[str, bytes]) -> set[str]:
    """Lease, look at and label every item, as a person does through the page's API: each image
    comes as a PNG showing what was sent, upright."""
    done: set[str] = set()
    deadline = asyncio.get_running_loop().time() + 180
    url = f"http://127.0.0.1:{s.label_port}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        while len(done) < len(truth):
            r = await client.post("/api/next")
            assert r.status_code == 200, r.text
            item = r.json()["item"]
            if item is None:  # label serve has not consumed every request yet
                assert asyncio.get_running_loop().time() < deadline, f"only {sorted(done)} reached label serve"
                await asyncio.sleep(0.5)
                continue
            image = await client.get(f"/api/items/{item['id']}/image")
            assert image.status_code == 200 and image.headers["content-type"] == "image/png", item["id"]
            assert shown(image.content) == shown(sent[item["id"]]), item["id"]
            r = await client.post(f"/api/items/{item['id']}/label", json={"label": truth[item["id"]]})
            assert r.status_code == 200, r.text
            done.add(item["id"])
    return done


async def _check_training_set(h: Harness, good: dict, large: list[str]) -> None:
    s, registry = h.settings, h.res.registry
    newest = registry.versions(s.model_name)[-1]
    assert newest.uri.startswith("s3://"), newest.uri
    assert newest.metrics["skipped_samples"] == 0
    assert newest.train_size == h.res.store.count_labeled()
    learner = Learner(s, h.res.store, blobs_from(s), registry)
    ids, _, labels, skipped = learner._labeled(ModelSpec.from_dict(newest.spec))
    trained = dict(zip(ids, labels.tolist()))
    assert skipped == 0
    assert {i: trained.get(i) for i in good} == {i: truth for i, (_, truth) in good.items()}
    assert set(large) <= trained.keys()
