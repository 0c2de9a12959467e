"""Streams of the user's own images on the embedded broker.

A folder of real photos (CIFAR-10 JPEGs, in ImageFolder layout) is streamed by
``activestream source`` by value and by reference, and an S3 prefix on a real
S3-compatible server (moto on 127.0.0.1) likewise: every photo is predicted exactly once.
A file named like an image that is not one is sent and dead-lettered as
``corrupt_image``; a file that cannot be read is skipped by value and dead-lettered
by reference (``image_not_found``); other files are skipped. ``activestream run
--images-from`` streams the folder instead of the demo dataset, and the simulated
labeler answers from the sub-folder names.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from s3_server import s3, s3_endpoint  # noqa: F401 - fixtures
from test_seed_folder import CIFAR_CLASSES, cifar_folder

from conftest import Harness, make_settings, run_async
from activestream.config import registry_from, worker_env
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.run import run_loop
from activestream.storage.listing import image_id

pytestmark = pytest.mark.kafka

PER_CLASS = 3  # 30 photos a test: enough for every class, quick on a loaded machine


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return cifar_folder(tmp_path_factory.mktemp("cifar"), PER_CLASS)


def photo_folder(tmp_path: Path, cifar: Path) -> tuple[Path, list[str]]:
    """CIFAR-10 JPEGs as ``photos/<class>/<n>.jpg``, plus the files a real folder holds:
    notes, a broken image, a dangling link. Returns the folder and the photos' keys."""
    folder = Path(shutil.copytree(cifar, tmp_path / "photos"))
    keys = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg"))
    (folder / "notes.txt").write_text("not an image")
    (folder / "cat" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (folder / "cat" / "gone.jpg").symlink_to(folder / "cat" / "deleted.jpg")  # listed, never readable
    return folder, keys


def source(settings, where: str, *flags: str) -> str:
    """``activestream source`` as a user runs it, beside the loop; its output."""
    done = subprocess.run([sys.executable, "-m", "activestream", "source", where, *flags], env=worker_env(settings),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def dead_images(h: Harness) -> dict[str, str]:
    return {d["key"]: d["error_kind"] for d in h.observer.seen.dead_records if d["topic"] == h.settings.topic_images}


def test_a_folder_by_value_and_by_reference(tmp_path, digits, cifar):
    folder, keys = photo_folder(tmp_path, cifar)
    settings = make_settings(tmp_path, fetch_roots=str(folder), budget=0.01)
    run_async(_folder(settings, digits, folder, keys), timeout=900)


async def _folder(settings, digits, folder: Path, keys: list[str]) -> None:
    # The seed is a digits model: any photo is resized to its input, which is all these checks need.
    async with Harness(settings, digits, workers=("predictor",)) as h:
        out = await asyncio.to_thread(source, h.settings, str(folder), "--by", "value", "--id-prefix", "v")
        assert f"sent {len(keys) + 1} images" in out and "not_image 1, unreadable 1" in out, out
        out = await asyncio.to_thread(source, h.settings, str(folder), "--by", "reference", "--id-prefix", "r")
        assert f"sent {len(keys) + 2} images" in out and "not_image 1)" in out, out

        good = {image_id(p, k) for p in ("v", "r") for k in keys}
        bad = {"v:cat:broken.jpg": "corrupt_image", "r:cat:broken.jpg": "corrupt_image",
               "r:cat:gone.jpg": "image_not_found"}
        seen = h.observer.seen
        await h.wait_for(lambda: good <= seen.predicted.keys(), 300, "every photo predicted")
        await h.wait_for(lambda: bad.keys() <= dead_images(h).keys(), 120, "every bad file dead-lettered")
        assert {k: v for k, v in dead_images(h).items() if k in bad} == bad
        assert seen.predicted.keys() == good
        assert seen.predictions == len(good), "a photo was predicted more than once"


def test_an_s3_prefix_by_reference_and_by_value(tmp_path, digits, s3, cifar):
    folder, keys = photo_folder(tmp_path, cifar)
    for key in keys:
        s3.client.put_object(Bucket=s3.name, Key=f"cams/{key}", Body=(folder / key).read_bytes())
    s3.client.put_object(Bucket=s3.name, Key="cams/cat/broken.jpg", Body=b"this is not a JPEG")
    s3.client.put_object(Bucket=s3.name, Key="cams/README.md", Body=b"not an image")
    s3.client.put_object(Bucket=s3.name, Key="cams-old/x.jpg", Body=(folder / keys[0]).read_bytes())  # not under cams/
    settings = make_settings(tmp_path, budget=0.01, fetch_buckets=f"{s3.name}/cams/")
    run_async(_prefix(settings, digits, s3, keys), timeout=900)


async def _prefix(settings, digits, s3, keys: list[str]) -> None:
    async with Harness(settings, digits, workers=("predictor",)) as h:
        out = await asyncio.to_thread(source, h.settings, s3.url("cams"), "--by", "reference")
        assert f"sent {len(keys) + 1} images" in out and "not_image 1)" in out, out
        out = await asyncio.to_thread(source, h.settings, s3.url("cams/"), "--by", "value", "--id-prefix", "v")
        assert f"sent {len(keys) + 1} images" in out, out

        good = {image_id(p, k) for p in ("cams", "v") for k in keys}
        bad = {"cams:cat:broken.jpg", "v:cat:broken.jpg"}
        seen = h.observer.seen
        await h.wait_for(lambda: good <= seen.predicted.keys(), 300, "every photo predicted")
        await h.wait_for(lambda: bad <= dead_images(h).keys(), 120, "the broken image dead-lettered")
        assert {dead_images(h)[k] for k in bad} == {"corrupt_image"}
        assert seen.predicted.keys() == good
        assert seen.predictions == len(good), "a photo was predicted more than once"


def test_run_streams_a_users_folder_and_the_simulated_labeler_answers_from_its_folders(tmp_path, cifar):
    folder, keys = photo_folder(tmp_path, cifar)
    settings = make_settings(tmp_path, images_from=str(folder), images_by="reference", budget=0.5,
                             audit_share=0.0, retrain_every=1000, rate=0.0, label_delay=0.0)
    spec = ModelSpec("small_cnn", CIFAR_CLASSES, 3, 32, 32, (0.5,) * 3, (0.5,) * 3)
    registry_from(settings).register(settings.model_name, state_arrays(Classifier.fresh(spec).model),
                                     spec=spec.to_dict(), parent=None, train_size=0, metrics={},
                                     status="promoted", by="ann", reason="an untrained start")
    observer, demo = run_async(run_loop(settings, asyncio.Event(), timeout=420), timeout=600)

    seen, prefix = observer.seen, folder.name
    truth = {image_id(prefix, k): CIFAR_CLASSES.index(k.split("/")[0]) for k in keys}
    assert demo.answered and demo.finished
    assert seen.predicted.keys() == truth.keys()
    assert set(demo.produced) == truth.keys() | {f"{prefix}:cat:broken.jpg", f"{prefix}:cat:gone.jpg"}
    assert demo.skipped == {"not_image": 1}
    assert seen.requested, "nothing was selected"
    assert seen.labels == {i: truth[i] for i in seen.requested}, "the simulated labeler answered from elsewhere"
