"""The diversity filter through the broker: predictor embeddings -> selector -> requests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest

from activestream.simulation.traffic import stream_items
from activestream.streams.demo import image_message
from tests.conftest import Harness, make_settings, run_async

pytestmark = pytest.mark.kafka

SCENES, FRAMES = 400, 5
# no audits (they ignore the filter by design) and no retraining (a new version clears its memory)
SELECT = dict(budget=0.05, audit_share=0.0, retrain_every=10_000, batch_size=64)


def test_bursts_of_one_scene_get_one_label_with_the_diversity_filter(tmp_path, digits):
    plain = run_async(_requests_per_scene(make_settings(tmp_path / "plain", dataset="digits", **SELECT), digits))
    diverse = run_async(_requests_per_scene(
        make_settings(tmp_path / "diverse", dataset="digits", diversity_radius=0.01, **SELECT), digits))
    budget = SELECT["budget"] * SCENES * FRAMES
    for requests in (plain, diverse):
        assert abs(sum(requests.values()) - budget) <= 0.2 * budget, requests
    repeated = sum(1 for n in diverse.values() if n > 1)
    print(f"\nscenes with more than one request: plain {sum(1 for n in plain.values() if n > 1)}, diverse {repeated}")
    assert sum(1 for n in plain.values() if n > 1) >= 10, "the plain selector should pick repeats of a scene"
    assert repeated == 0, f"{repeated} scenes got more than one request with the filter on"


async def _requests_per_scene(settings, digits) -> Counter:
    """Stream each of ``SCENES`` images ``FRAMES`` times in a row (a burst of frames of one
    scene, each under its own id); return the number of requests per scene."""
    async with Harness(settings, digits, workers=("predictor", "selector")) as h:
        s, ids = h.settings, []
        for item in stream_items(digits, h.stream_idx, SCENES):
            for frame in range(FRAMES):
                frame_item = dataclasses.replace(item, id=f"{item.id}.f{frame}")
                ids.append(frame_item.id)
                await h.send(s.topic_images, image_message(frame_item), frame_item.id.encode())
        await h.producer.flush()
        await h.wait_for(lambda: set(ids) <= h.observer.seen.predicted.keys(), 120, "every frame predicted")
        total = len(ids)
        # the selector is one batch behind the predictor at most: wait until its requests stop growing
        await h.wait_for(lambda: len(h.observer.seen.requested) >= 0.8 * settings.budget * total, 60, "requests")
        previous = -1
        while previous != len(h.observer.seen.requested):
            previous = len(h.observer.seen.requested)
            await asyncio.sleep(2.0)
        return Counter(i.rsplit(".f", 1)[0] for i in h.observer.seen.requested)
