"""Decoding under poison: a stream of small images, clean against one where 10% of the
messages are decoding bombs, through ``decode_image`` with the predictor's model spec.

    python benchmarks/poison.py [--images 4000] [--rounds 7] [--dataset fashion-mnist] [--poison 0.1]

The clean stream alternates PNG and JPEG encodings of real images. In the poisoned one,
every tenth message is a bomb instead: PNGs of the right size carrying a zTXt or an iCCP
chunk that inflates to 400 MB, and JPEGs whose frame header claims 30000x30000 or
65500x65500. A bomb that costs about what an image costs keeps the ratio near 1; before
the header checks it was 0.40-0.49.

The machine is shared and its speed drifts, so the run is a series of paired rounds (clean
and poisoned back to back, in alternating order); the table gives medians over rounds and
the range of the per-round ratio. Throughput counts messages handled, decoded or refused.
Peak RSS growth is VmHWM after the rounds less VmHWM before them: it stays flat when no
bomb is inflated.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
import zlib
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activestream.config import Settings  # noqa: E402
from activestream.errors import InvalidInput  # noqa: E402
from activestream.learners.models import ModelSpec  # noqa: E402
from activestream.learners.preprocess import decode_image, encode_png  # noqa: E402
from activestream.simulation.datasets import load_dataset  # noqa: E402
from activestream.simulation.seed import spec_for  # noqa: E402


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zeros_deflated(megabytes: int) -> bytes:
    packer, block = zlib.compressobj(9), bytes(1 << 20)  # a block at a time: no 400 MB buffer to skew VmHWM
    return b"".join([*(packer.compress(block) for _ in range(megabytes)), packer.flush()])


def bombs(image: np.ndarray) -> list[tuple[str, bytes]]:
    """Each kind of bomb, built on one image of the model's size and mode."""
    png, jpeg, deflated = encode_png(image), _jpeg(image), _zeros_deflated(400)
    sof = jpeg.index(b"\xff\xc0") + 5  # past marker, length and precision: height, width
    return [
        ("PNG zTXt bomb", png[:33] + _chunk(b"zTXt", b"Comment\0\0" + deflated) + png[33:]),
        ("PNG iCCP bomb", png[:33] + _chunk(b"iCCP", b"profile\0\0" + deflated) + png[33:]),
        ("JPEG 30000x30000", jpeg[:sof] + struct.pack(">HH", 30000, 30000) + jpeg[sof + 4:]),
        ("JPEG 65500x65500", jpeg[:sof] + struct.pack(">HH", 65500, 65500) + jpeg[sof + 4:]),
    ]


def streams(images: np.ndarray, poison: float) -> tuple[list, list]:
    """``(clean, poisoned)``: lists of ``(kind, bytes)`` of the same length."""
    clean = [("PNG", encode_png(image)) if i % 2 else ("JPEG", _jpeg(image)) for i, image in enumerate(images)]
    kinds, every = bombs(images[0]), round(1 / poison)
    poisoned = [kinds[(i // every) % len(kinds)] if i % every == every - 1 else message
                for i, message in enumerate(clean)]
    return clean, poisoned


def handle(stream: list[tuple[str, bytes]], spec: ModelSpec) -> float:
    """Messages a second, each decoded or refused as the predictor does."""
    started = time.perf_counter()
    for _, data in stream:
        try:
            decode_image(data, spec)
        except InvalidInput:
            pass
    return len(stream) / (time.perf_counter() - started)


def cost_per_kind(stream: list[tuple[str, bytes]], spec: ModelSpec) -> dict[str, float]:
    """Median microseconds a message, by kind."""
    seconds: dict[str, list[float]] = {}
    for kind, data in stream:
        started = time.perf_counter()
        try:
            decode_image(data, spec)
        except InvalidInput:
            pass
        seconds.setdefault(kind, []).append(time.perf_counter() - started)
    return {kind: median(s) * 1e6 for kind, s in seconds.items()}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dataset", default="auto")
    ap.add_argument("--poison", type=float, default=0.1, help="share of the messages that are bombs")
    args = ap.parse_args()
    settings = Settings(dataset=args.dataset)
    ds = load_dataset(settings.dataset, settings.data_dir)
    spec = spec_for(ds)
    clean, poisoned = streams(ds.train_x[:args.images], args.poison)
    handle(clean[:200], spec)  # warm-up
    handle(poisoned[:200], spec)
    before = peak_rss_mb()
    rates: dict[str, list[float]] = {"clean": [], "poisoned": []}
    for r in range(args.rounds):
        for name in ("clean", "poisoned") if r % 2 == 0 else ("poisoned", "clean"):
            rates[name].append(handle(clean if name == "clean" else poisoned, spec))
    costs = cost_per_kind(poisoned, spec)
    growth = peak_rss_mb() - before
    ratios = [p / c for p, c in zip(rates["poisoned"], rates["clean"])]
    bombs_sent = sum(kind not in ("PNG", "JPEG") for kind, _ in poisoned)
    print(f"dataset {ds.name}, {len(clean)} messages of {spec.width}x{spec.height}x{spec.channels} "
          f"(PNG and JPEG alternating), {bombs_sent} of them bombs in the poisoned stream; "
          f"medians of {args.rounds} paired rounds")
    print(f"{'clean':24s} {median(rates['clean']):9.0f} messages/s")
    print(f"{'poisoned':24s} {median(rates['poisoned']):9.0f} messages/s")
    print(f"{'ratio poisoned/clean':24s} {median(ratios):9.2f}   (rounds {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.8)")
    print(f"{'peak RSS growth':24s} {growth:9.1f} MB      (VmHWM {before:.0f} -> {before + growth:.0f} MB)")
    print("median cost a message, by kind:")
    for kind, micros in costs.items():
        print(f"  {kind:22s} {micros:9.1f} us")


if __name__ == "__main__":
    main()
