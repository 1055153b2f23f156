#!/usr/bin/env python3
"""The training-side programs of `scripts/bench train`, run with the bench's own virtualenv
(Pillow and numpy; torch when it is importable there, never required).

  generate DIR  write --images JPEG images of 20-200 KB (mixed sizes and shapes, 10 class
                directories under DIR/train) and DIR/annotations.csv (path,label)
  epoch         one epoch over --root: a PyTorch-style Dataset (open the file, decode with PIL,
                convert to RGB, resize to 224x224, to a float32 CHW array scaled to [0, 1]) read
                through a DataLoader-style loader: indices shuffled with --seed, batches of
                --batch-size, --workers 0 = in the calling process, N = N worker processes
                that get whole batches round-robin, two batches ahead each (torch's
                prefetch_factor), and hand them back in shared memory; the main process yields
                them in order. With torch importable, torch.utils.data.DataLoader does the same
                with this Dataset. Prints {"seconds", "images", "batches", "loader"} as JSON:
                seconds from the start of iteration (workers start) to the last batch.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import random
import sys
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = 224
CLASSES = 10
BYTES_PER_PIXEL = 0.62  # JPEG quality 90 of the picture below: measured, about constant


# ---------------------------------------------------------------------------------------------
# data


def generate(out: Path, images: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    rows = []
    total = 0
    for i in range(images):
        label = i % CLASSES
        target = rng.uniform(20_000, 200_000)  # bytes
        aspect = rng.uniform(0.75, 1.33)
        pixels = target / BYTES_PER_PIXEL
        w = max(64, round((pixels * aspect) ** 0.5))
        h = max(64, round(pixels / w))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        mix = (x / w + y / h)[..., None] / 2
        base = c0 * (1 - mix) + c1 * mix
        pic = np.clip(base + rng.normal(0, 32, (h, w, 3)), 0, 255).astype(np.uint8)
        rel = f"train/class_{label:02d}/img_{i:06d}.jpg"
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pic).save(path, "JPEG", quality=90)
        total += path.stat().st_size
        rows.append((rel, label))
    random.Random(seed).shuffle(rows)  # a CSV index in no particular order
    with open(out / "annotations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return total


class ImageDataset:
    """What a torchvision-style Dataset does per sample."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with open(root / "annotations.csv", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            self.items = [(row[0], int(row[1])) for row in reader]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        rel, label = self.items[i]
        with open(self.root / rel, "rb") as f:
            img = Image.open(f)
            img.load()
        img = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0  # like ToTensor()
        return arr, label


def collate(samples: list[tuple[Any, int]]) -> tuple[Any, Any]:
    return np.stack([s[0] for s in samples]), np.array([s[1] for s in samples], dtype=np.int64)


def batches_of(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


# ---------------------------------------------------------------------------------------------
# a DataLoader-style loader with worker processes


def _worker(ds: ImageDataset, tasks: Any, results: Any) -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        k, indices = task
        try:
            x, y = collate([ds[i] for i in indices])
            shm = shared_memory.SharedMemory(create=True, size=x.nbytes)
            resource_tracker.unregister(shm._name, "shared_memory")  # the main process unlinks
            np.ndarray(x.shape, x.dtype, buffer=shm.buf)[...] = x
            results.put((k, shm.name, x.shape, y))
            shm.close()
        except BaseException as e:  # handed to the main process
            results.put((k, None, repr(e), None))


def iterate_workers(ds: ImageDataset, batches: list[list[int]], workers: int) -> Iterator[Any]:
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    queues = [ctx.Queue() for _ in range(workers)]
    procs = [ctx.Process(target=_worker, args=(ds, q, results), daemon=True) for q in queues]
    for p in procs:
        p.start()
    sent = 0

    def send() -> None:
        nonlocal sent
        if sent < len(batches):
            queues[sent % workers].put((sent, batches[sent]))
            sent += 1

    try:
        for _ in range(2 * workers):  # prefetch_factor 2
            send()
        waiting: dict[int, Any] = {}
        for k in range(len(batches)):
            while k not in waiting:
                got = results.get()
                waiting[got[0]] = got
            _, name, shape, y = waiting.pop(k)
            if name is None:
                raise RuntimeError(f"worker failed on batch {k}: {shape}")
            shm = shared_memory.SharedMemory(name=name)
            x = np.ndarray(shape, np.float32, buffer=shm.buf)
            yield x, y
            del x
            shm.close()
            shm.unlink()
            send()
    finally:
        for q in queues:
            q.put(None)
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def iterate(ds: ImageDataset, batches: list[list[int]], workers: int) -> Iterator[Any]:
    if workers == 0:
        for indices in batches:
            yield collate([ds[i] for i in indices])
    else:
        yield from iterate_workers(ds, batches, workers)


def epoch_torch(torch: Any, ds: ImageDataset, args: argparse.Namespace) -> tuple[int, int]:
    class TorchDataset(torch.utils.data.Dataset):  # type: ignore[misc,name-defined]
        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int) -> Any:
            x, y = ds[i]
            return torch.from_numpy(x), y

    gen = torch.Generator()
    gen.manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        TorchDataset(),
        batch_size=args.batch_size,
        shuffle=True,
        generator=gen,
        num_workers=args.workers,
    )
    images = batches = 0
    for x, _ in loader:
        images += x.shape[0]
        batches += 1
    return images, batches


def epoch(args: argparse.Namespace) -> int:
    ds = ImageDataset(args.root)
    torch = None
    if not args.no_torch:
        try:
            import torch  # type: ignore[no-redef]
        except ImportError:
            torch = None
    start = time.perf_counter()
    if torch is not None:
        images, batches = epoch_torch(torch, ds, args)
        loader = f"torch {torch.__version__} DataLoader"
    else:
        images = batches = 0
        for x, _ in iterate(ds, batches_of(len(ds), args.batch_size, args.seed), args.workers):
            images += x.shape[0]
            batches += 1
        loader = "bench_train_loader (torch not importable)"
    seconds = time.perf_counter() - start
    if images != len(ds):
        raise SystemExit(f"the epoch yielded {images} images, the dataset has {len(ds)}")
    print(json.dumps({"seconds": seconds, "images": images, "batches": batches, "loader": loader}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("out", type=Path)
    g.add_argument("--images", type=int, default=3000)
    g.add_argument("--seed", type=int, default=1)
    e = sub.add_parser("epoch")
    e.add_argument("--root", type=Path, required=True)
    e.add_argument("--workers", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--no-torch", action="store_true", help="the bench's loader even with torch")
    args = parser.parse_args()
    if args.command == "generate":
        total = generate(args.out, args.images, args.seed)
        print(f"{args.images} images, {total:,} bytes in {args.out}")
        return 0
    return epoch(args)


if __name__ == "__main__":
    sys.exit(main())
