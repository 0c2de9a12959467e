"""Decoding and resizing on the predictor's hot path, against the usual ways, on the same
encoded images, in one run.

    python benchmarks/decode.py [--images 200] [--repeats 5] [--side 224]

Small PNGs (the demo dataset's): ``decode_batch`` and ``decode_image`` (libspng) against torchvision's PNG
decoding op, which the predictor called before. JPEG photos at 32x32, 224x224, 640x480,
1024x768 and 2048x1536 into an RGB model input of ``--side`` (shorter side, then centre
crop), as whole batches:

- decode_batch: what the predictor runs. torchvision's libjpeg-turbo op, or for a JPEG
  at least twice the size the model needs, libjpeg-turbo's DCT scaling through Pillow's
  ``draft``; images of one size resized together by torch's uint8 antialiased kernel.
- no DCT scaling: decode_batch with every JPEG decoded at full size.
- full decode, resize each: torchvision's op at full size, then torchvision's resize and
  centre crop image by image.
- Pillow: open, ``convert("RGB")``, Pillow's resize and crop image by image.

Each figure is the best of ``--repeats`` passes, taken in turns, because a shared machine
only ever slows a pass down. Torch runs one thread, as in a predictor.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.io import ImageReadMode  # also loads the extension that registers torch.ops.image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from images import jpegs  # noqa: E402

from activestream.config import Settings  # noqa: E402
from activestream.learners.models import ModelSpec  # noqa: E402
from activestream.learners import preprocess  # noqa: E402
from activestream.learners.preprocess import decode_batch, decode_image, encode_png  # noqa: E402
from activestream.simulation.datasets import load_dataset  # noqa: E402
from activestream.simulation.seed import spec_for  # noqa: E402

SIZES = [(32, 32), (224, 224), (640, 480), (1024, 768), (2048, 1536)]


def torchvision_png(data: bytes, spec) -> np.ndarray:
    # the op itself: torchvision.io.decode_png's usage logging would cost the baseline more
    image = torch.ops.image.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                       ImageReadMode.UNCHANGED.value, False)
    if tuple(image.shape) != (spec.channels, spec.height, spec.width):
        raise ValueError("wrong layout")
    return image.numpy()[0] if spec.channels == 1 else image.numpy().transpose(1, 2, 0)


def full_decode_each(blobs: list[bytes], spec: ModelSpec) -> np.ndarray:
    out = np.empty((len(blobs), spec.height, spec.width, 3), np.uint8)
    for i, data in enumerate(blobs):
        x = torch.ops.image.decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB.value, True)
        x = F.center_crop(F.resize(x, [spec.height], antialias=True), [spec.height, spec.width])
        out[i] = x.permute(1, 2, 0).numpy()
    return out


def pillow_each(blobs: list[bytes], spec: ModelSpec) -> np.ndarray:
    out = np.empty((len(blobs), spec.height, spec.width, 3), np.uint8)
    for i, data in enumerate(blobs):
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            scale = spec.height / min(im.size)
            w, h = max(spec.width, int(im.width * scale)), max(spec.height, int(im.height * scale))
            im = im.resize((w, h), Image.BILINEAR)
            left, top = (w - spec.width) // 2, (h - spec.height) // 2
            out[i] = np.asarray(im.crop((left, top, left + spec.width, top + spec.height)))
    return out


def without_dct_scaling(blobs: list[bytes], spec: ModelSpec) -> np.ndarray:
    """``decode_batch`` with every JPEG decoded at full size: what DCT scaling saves."""
    saved, preprocess.DCT_MIN_REDUCTION = preprocess.DCT_MIN_REDUCTION, 1 << 30
    try:
        return decode_batch(blobs, spec)[0]
    finally:
        preprocess.DCT_MIN_REDUCTION = saved


def best_of(runs: dict, repeats: int) -> dict[str, float]:
    """Seconds an image, the best of ``repeats`` passes of each, in turns."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, (run, count) in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - started) / count)
    return best


def small_pngs(args) -> None:
    ds = load_dataset(Settings(dataset=args.dataset).dataset, Settings(dataset=args.dataset).data_dir)
    spec = spec_for(ds)
    pngs = [encode_png(image) for image in ds.train_x[:5000]]
    for data in pngs[:100]:
        assert np.array_equal(decode_image(data, spec), torchvision_png(data, spec))
    best = best_of({"decode_batch (libspng)": (lambda: decode_batch(pngs, spec), len(pngs)),
                    "decode_image, one by one": (lambda: [decode_image(p, spec) for p in pngs], len(pngs)),
                    "torchvision's decode_png op": (lambda: [torchvision_png(p, spec) for p in pngs], len(pngs))},
                   args.repeats)
    print(f"dataset {ds.name}: {len(pngs)} PNGs of {spec.width}x{spec.height}x{spec.channels}")
    for name, seconds in best.items():
        print(f"  {name:30s} {seconds * 1e6:8.1f} us an image")


def photo_jpegs(args) -> None:
    spec = ModelSpec("mobilenet_v3_small", ("a", "b"), 3, args.side, args.side, (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225))
    print(f"JPEG photos (quality 90) to {args.side}x{args.side} RGB, shorter side then centre crop; "
          f"us an image (ratio to decode_batch)")
    for width, height in SIZES:
        blobs = jpegs(width, height, args.images)
        ours = decode_batch(blobs, spec)[0].astype(int)
        drift = np.abs(ours - full_decode_each(blobs, spec)).mean()
        best = best_of({"decode_batch": (lambda: decode_batch(blobs, spec), len(blobs)),
                        "no DCT scaling": (lambda: without_dct_scaling(blobs, spec), len(blobs)),
                        "full decode, resize each": (lambda: full_decode_each(blobs, spec), len(blobs)),
                        "Pillow": (lambda: pillow_each(blobs, spec), len(blobs))}, args.repeats)
        base = best["decode_batch"]
        cells = "  ".join(f"{name} {s * 1e6:7.0f} ({s / base:.2f})" for name, s in best.items())
        print(f"  {width:4d}x{height:<4d} {np.mean([len(b) for b in blobs]) / 1024:6.1f} KiB  {cells}  "
              f"mean |difference| to full decode {drift:.2f} levels")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="JPEGs of each size")
    ap.add_argument("--dataset", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--side", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(1)
    small_pngs(args)
    photo_jpegs(args)


if __name__ == "__main__":
    main()
