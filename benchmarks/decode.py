"""Image decoding on the predictor's hot path: ``decode_image`` (libspng for a PNG) against
torchvision's PNG decoding op (what the predictor called before), on the same encoded images, in one run.

    python benchmarks/decode.py [--images 5000] [--dataset fashion-mnist] [--repeats 7]

Both sides decode every image and check it against the model's input contract; each
figure is the best of ``--repeats`` passes, taken in turns, because a shared machine only
ever slows a pass down.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode  # also loads the extension that registers torch.ops.image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activestream.config import Settings  # noqa: E402
from activestream.learners.preprocess import decode_image, encode_png  # noqa: E402
from activestream.simulation.datasets import load_dataset  # noqa: E402
from activestream.simulation.seed import spec_for  # noqa: E402


def torchvision_decode(data: bytes, spec) -> np.ndarray:
    # the op itself: torchvision.io.decode_png's usage logging would cost the baseline more
    image = torch.ops.image.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                       ImageReadMode.UNCHANGED.value, False)
    if tuple(image.shape) != (spec.channels, spec.height, spec.width):
        raise ValueError("wrong layout")
    return image.numpy()[0] if spec.channels == 1 else image.numpy().transpose(1, 2, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dataset", default="auto")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    settings = Settings(dataset=args.dataset)
    ds = load_dataset(settings.dataset, settings.data_dir)
    spec = spec_for(ds)
    pngs = [encode_png(image) for image in ds.train_x[:args.images]]
    for data in pngs[:100]:
        assert np.array_equal(decode_image(data, spec), torchvision_decode(data, spec))
    best = {"decode_image (libspng)": float("inf"), "torchvision's decode_png op": float("inf")}
    for _ in range(args.repeats):
        for name, decode in zip(best, (decode_image, torchvision_decode)):
            started = time.perf_counter()
            for data in pngs:
                decode(data, spec)
            best[name] = min(best[name], (time.perf_counter() - started) / len(pngs))
    print(f"dataset {ds.name}, {len(pngs)} PNGs of {spec.width}x{spec.height}x{spec.channels}, "
          f"mean {np.mean([len(p) for p in pngs]):.0f} bytes; best of {args.repeats} passes")
    for name, seconds in best.items():
        print(f"{name:28s} {seconds * 1e6:7.2f} us an image")
    new, old = best.values()
    print(f"ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
