#!/usr/bin/env python3
"""Seeded synthetic datasets for the dsfs benchmarks (stdlib only).

Subcommands:
  generate OUT      an ML-style dataset: incompressible "images" in class folders, an annotations
                    CSV, a captions JSONL and one big binary shard (~2 GiB at --scale 1.0)
  mutate DIR        turn a generated dataset into a realistic next version, in place
  manyfiles OUT     N small files, 1000 per directory (or all in one with --flat)
  touch-one DIR     change the content of one file of a tree

Everything is deterministic: the same arguments give byte-identical trees.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
PIECE = 16 * MIB  # random.randbytes() must stay well under 256 MiB per call

# Sizes at --scale 1.0 (bytes unless said otherwise); everything scales linearly.
IMAGES_AT_1 = 19_000
IMAGE_MIN = 20 * KIB
IMAGE_SPREAD = 180 * KIB  # size = IMAGE_MIN + IMAGE_SPREAD * u**2, mean ~80 KiB
CLASSES_MAX = 100
CSV_BYTES_AT_1 = 160_000_000
JSONL_BYTES_AT_1 = 90_000_000
SHARD_BYTES_AT_1 = 380_000_000
CSV_ROWS_AT_1 = 1_213_000  # roughly what CSV_BYTES_AT_1 holds; scales the mutation row counts

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x48\x00\x48\x00\x00"
JPEG_TAIL = b"\xff\xd9"

CSV_HEADER = (
    "ann_id,image_id,path,class_id,class_name,x_min,y_min,x_max,y_max,area,"
    "confidence,split,annotator,iscrowd,created\n"
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NOUNS = _words(
    "tench goldfish shark hen ostrich finch junco robin bulbul jay magpie chickadee kite vulture "
    "owl salamander newt frog turtle gecko iguana lizard chameleon alligator triceratops snake "
    "boa python viper scorpion spider tick centipede grouse peacock quail partridge parrot macaw "
    "toucan hornbill hummingbird jacamar duck goose swan tusker echidna platypus wallaby koala "
    "wombat jellyfish anemone coral flatworm nematode conch snail slug chiton lobster crab "
    "crayfish isopod stork spoonbill flamingo heron egret bittern crane limpkin gallinule coot "
    "bustard turnstone dunlin redshank dowitcher oystercatcher pelican penguin albatross whale "
    "dugong seal chihuahua spaniel terrier retriever setter pointer collie sheepdog husky "
    "dalmatian pug poodle wolf coyote dingo dhole fox cat lynx leopard jaguar lion tiger cheetah"
)
ADJECTIVES = _words(
    "small large red blue green brown black white striped spotted young old wet dry bright "
    "dark blurry sharp distant close sleeping running flying swimming sitting standing curious"
)
PLACES = _words(
    "field forest river beach street garden kitchen road lake mountain park shore snow grass "
    "sand fence tree rock bench window table cage zoo farm city desert meadow pond"
)
FILLER = _words("a the of in on with near under beside and its two three some one")


class UsageError(Exception):
    """A user error: reported as one line, exit code 2."""


def _rng(seed: int, stream: str) -> random.Random:
    """An independent deterministic stream per purpose (so one part can change alone)."""
    return random.Random(f"dsfs-bench:{seed}:{stream}")


def _write_random_file(path: Path, rnd: random.Random, n: int) -> None:
    with open(path, "wb") as f:
        for off in range(0, n, PIECE):
            f.write(rnd.randbytes(min(PIECE, n - off)))


def _ensure_empty_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{out} exists and is not a directory")
        if any(out.iterdir()):
            raise UsageError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------------------
# generate


@dataclass(frozen=True)
class Layout:
    """What a dataset at a given scale contains."""

    images: int
    classes: int
    csv_bytes: int
    jsonl_bytes: int
    shard_bytes: int

    @classmethod
    def for_scale(cls, scale: float) -> Layout:
        if scale <= 0:
            raise UsageError("--scale must be > 0")
        images = max(8, round(IMAGES_AT_1 * scale))
        return cls(
            images=images,
            classes=max(3, min(CLASSES_MAX, images // 20)),
            csv_bytes=max(4 * KIB, round(CSV_BYTES_AT_1 * scale)),
            jsonl_bytes=max(4 * KIB, round(JSONL_BYTES_AT_1 * scale)),
            shard_bytes=max(64 * KIB, round(SHARD_BYTES_AT_1 * scale)),
        )


def class_name(index: int) -> str:
    return f"{index:03d}_{NOUNS[index % len(NOUNS)]}"


def image_path(cls: str, image_id: int) -> str:
    return f"images/{cls}/{image_id:08d}.jpg"


def image_bytes(rnd: random.Random) -> bytes:
    size = IMAGE_MIN + int(IMAGE_SPREAD * rnd.random() ** 2)
    body = size - len(JPEG_HEAD) - len(JPEG_TAIL)
    return JPEG_HEAD + rnd.randbytes(body) + JPEG_TAIL


def csv_rows(rnd: random.Random, images: list[tuple[int, str]], first_ann_id: int) -> Iterator[str]:
    """Endless annotation rows; images are visited in order, several boxes each."""
    rand = rnd.random
    randrange = rnd.randrange
    ann_id = first_ann_id
    while True:
        for image_id, cls in images:
            class_id, _, name = cls.partition("_")
            head = f"{image_id},{image_path(cls, image_id)},{int(class_id)},{name},"
            split = "train" if rand() < 0.8 else ("val" if rand() < 0.5 else "test")
            tail = (
                f"{split},ann_{randrange(40):02d},%d,2023-{randrange(1, 13):02d}-"
                f"{randrange(1, 29):02d}T{randrange(24):02d}:{randrange(60):02d}:"
                f"{randrange(60):02d}Z\n"
            )
            tails = (tail % 0, tail % 1)
            for _ in range(1 + randrange(140)):
                x0 = rand() * 0.8
                y0 = rand() * 0.8
                x1 = x0 + rand() * (1.0 - x0)
                y1 = y0 + rand() * (1.0 - y0)
                yield (
                    f"{ann_id},{head}{x0:.4f},{y0:.4f},{x1:.4f},{y1:.4f},"
                    f"{(x1 - x0) * (y1 - y0):.5f},{0.5 + rand() * 0.5:.3f},"
                    f"{tails[rand() < 0.03]}"
                )
                ann_id += 1


def box_fields(rnd: random.Random) -> list[str]:
    """x_min, y_min, x_max, y_max, area, confidence as CSV fields."""
    x0 = rnd.random() * 0.8
    y0 = rnd.random() * 0.8
    x1 = x0 + rnd.random() * (1.0 - x0)
    y1 = y0 + rnd.random() * (1.0 - y0)
    area = (x1 - x0) * (y1 - y0)
    conf = 0.5 + rnd.random() * 0.5
    return [f"{x0:.4f}", f"{y0:.4f}", f"{x1:.4f}", f"{y1:.4f}", f"{area:.5f}", f"{conf:.3f}"]


def _write_lines_until(path: Path, lines: Iterator[str], target: int, header: str = "") -> int:
    """Write lines until the file reaches about `target` bytes; returns the number of lines."""
    written = len(header)
    count = 0
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write(header)
        while written < target:
            batch = []
            size = 0
            for line in lines:
                batch.append(line)
                size += len(line)
                if size >= 4 * MIB or written + size >= target:
                    break
            f.write("".join(batch))
            written += size
            count += len(batch)
    return count


def caption_lines(
    rnd: random.Random, images: list[tuple[int, str]], first_id: int
) -> Iterator[str]:
    """Endless captions JSONL lines, cycling over the images."""
    choice = rnd.choice
    phrases = [  # "near wet heron lake": captions are a few phrases from a large pool
        f"{choice(FILLER)} {choice(ADJECTIVES)} {choice(NOUNS)} {choice(PLACES)}"
        for _ in range(50_000)
    ]
    randrange = rnd.randrange
    choices = rnd.choices
    cap_id = first_id
    while True:
        for image_id, cls in images:
            k = randrange(2, 9)
            caption = f"{choice(FILLER)} {choice(ADJECTIVES)} {cls.partition('_')[2]} " + " ".join(
                choices(phrases, k=k)
            )
            yield (
                f'{{"id": {cap_id}, "image": "{image_path(cls, image_id)}", '
                f'"caption": "{caption}", "lang": "en", "tokens": {3 + 4 * k}, '
                f'"score": {rnd.random():.4f}}}\n'
            )
            cap_id += 1


def _gen_images(out: Path, seed: int, images: list[tuple[int, str]]) -> int:
    pixels = _rng(seed, "images")
    total = 0
    for image_id, cls in images:
        data = image_bytes(pixels)
        (out / image_path(cls, image_id)).write_bytes(data)
        total += len(data)
    return total


def _gen_csv(out: Path, seed: int, images: list[tuple[int, str]], target: int) -> int:
    rows = csv_rows(_rng(seed, "csv"), images, 1)
    return _write_lines_until(out / "annotations.csv", rows, target, CSV_HEADER)


def _gen_jsonl(out: Path, seed: int, images: list[tuple[int, str]], target: int) -> int:
    lines = caption_lines(_rng(seed, "jsonl"), images, 1)
    return _write_lines_until(out / "captions.jsonl", lines, target)


def _gen_shard(out: Path, seed: int, size: int) -> int:
    _write_random_file(out / "shards" / "train-00000.bin", _rng(seed, "shard"), size)
    return size


def generate(out: Path, seed: int, scale: float, jobs: int) -> str:
    layout = Layout.for_scale(scale)
    _ensure_empty_out(out)
    meta = _rng(seed, "meta")
    classes = [class_name(i) for i in range(layout.classes)]
    weights = [1.0 + meta.random() * 3.0 for _ in classes]  # uneven class sizes
    labels = meta.choices(classes, weights=weights, k=layout.images)
    images = list(enumerate(labels))
    for cls in classes:
        (out / "images" / cls).mkdir(parents=True)
    (out / "shards").mkdir()

    # Every part has its own random stream, so they can be written in parallel and the tree
    # stays byte-identical whatever the number of workers.
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        f_images = pool.submit(_gen_images, out, seed, images)
        f_csv = pool.submit(_gen_csv, out, seed, images, layout.csv_bytes)
        f_jsonl = pool.submit(_gen_jsonl, out, seed, images, layout.jsonl_bytes)
        f_shard = pool.submit(_gen_shard, out, seed, layout.shard_bytes)
        image_total, rows, caps, _ = (f.result() for f in (f_images, f_csv, f_jsonl, f_shard))
    total = image_total + layout.csv_bytes + layout.jsonl_bytes + layout.shard_bytes
    return (
        f"generated {out}: {layout.images} images in {layout.classes} classes "
        f"({image_total / MIB:.1f} MiB), {rows} CSV rows, {caps} captions, "
        f"shard {layout.shard_bytes / MIB:.1f} MiB, ~{total / MIB:.1f} MiB total"
    )


# ---------------------------------------------------------------------------------------------
# mutate


def _list_images(root: Path) -> list[Path]:
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise UsageError(f"{root} does not look like a generated dataset (no images/)")
    return sorted(images_dir.glob("*/*.jpg"))


def _mutate_images(root: Path, rnd: random.Random) -> tuple[list[tuple[int, str]], str]:
    paths = _list_images(root)
    if not paths:
        raise UsageError(f"{root}/images holds no images")
    deleted = rnd.sample(paths, max(1, round(len(paths) * 0.02)))
    for p in deleted:
        p.unlink()
    class_dirs = sorted(d.name for d in (root / "images").iterdir() if d.is_dir())
    try:
        next_index = 1 + max(int(name.partition("_")[0]) for name in class_dirs)
        next_id = 1 + max(int(p.stem) for p in paths)
    except ValueError as e:
        raise UsageError(f"{root} was not made by `dataset.py generate` ({e})") from e
    new_class = class_name(next_index)
    (root / "images" / new_class).mkdir()
    added: list[tuple[int, str]] = []
    n_add = max(2, round(len(paths) * 0.03))
    for i in range(n_add):
        cls = new_class if i % 3 == 0 else rnd.choice(class_dirs)
        added.append((next_id + i, cls))
    for image_id, cls in added:
        (root / image_path(cls, image_id)).write_bytes(image_bytes(rnd))
    in_new = sum(1 for _, cls in added if cls == new_class)
    return added, f"+{len(added)} images ({in_new} in new class {new_class}), -{len(deleted)}"


def _sample_runs(rows: list[bytes], rnd: random.Random, target: int) -> list[tuple[int, int]]:
    """Random runs of consecutive rows of the same image, about `target` rows in all."""
    runs: list[tuple[int, int]] = []
    start = 0
    current = rows[0].split(b",", 2)[1:2]
    for i, row in enumerate(rows):
        image = row.split(b",", 2)[1:2]
        if image != current:
            runs.append((start, i))
            start, current = i, image
    runs.append((start, len(rows)))
    picked: list[tuple[int, int]] = []
    total = 0
    for run in rnd.sample(runs, len(runs)):
        if total >= target:
            break
        picked.append(run)
        total += run[1] - run[0]
    return sorted(picked)


def _mutate_csv(path: Path, rnd: random.Random, added: list[tuple[int, str]]) -> str:
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    rows = body.split(b"\n")
    if rows and rows[-1] == b"":
        rows.pop()
    if not rows:
        raise UsageError(f"{path} has no rows")
    next_ann = 1 + max(int(r.partition(b",")[0]) for r in rows)

    # A review pass re-draws every box of ~1% of the images: ~1% of the rows, in runs.
    changed = 0
    for start, end in _sample_runs(rows, rnd, max(1, round(len(rows) * 0.01))):
        for i in range(start, end):
            f = rows[i].decode("ascii").split(",")
            f[5:11] = box_fields(rnd)
            f[12] = f"ann_{rnd.randrange(40, 50):02d}"
            rows[i] = ",".join(f).encode("ascii")
        changed += end - start

    # ~1000 rows inserted mid-file and ~5000 appended at --scale 1.0, proportional otherwise.
    n_insert = max(10, round(len(rows) * 1000 / CSV_ROWS_AT_1))
    n_append = max(10, round(len(rows) * 5000 / CSV_ROWS_AT_1))
    gen = csv_rows(rnd, added, next_ann)
    inserted = [next(gen).rstrip("\n").encode("ascii") for _ in range(n_insert)]
    appended = [next(gen).rstrip("\n").encode("ascii") for _ in range(n_append)]
    mid = len(rows) // 2
    rows[mid:mid] = inserted
    rows.extend(appended)
    with open(path, "wb") as out:
        out.write(header + b"\n")
        out.write(b"\n".join(rows))
        out.write(b"\n")
    return f"CSV {changed} rows changed, {n_insert} inserted mid-file, {n_append} appended"


def _mutate_jsonl(path: Path, rnd: random.Random, added: list[tuple[int, str]]) -> str:
    data = path.read_bytes()
    lines = data.count(b"\n")
    last = data.rstrip(b"\n").rpartition(b"\n")[2]
    last_id = int(last.split(b",", 1)[0].partition(b":")[2])
    n = max(1, round(lines * 0.02))
    gen = caption_lines(rnd, added, last_id + 1)
    with open(path, "a", encoding="ascii", newline="") as f:
        f.write("".join(next(gen) for _ in range(n)))
    return f"JSONL +{n} lines"


def _mutate_shard(path: Path, rnd: random.Random) -> str:
    size = path.stat().st_size
    region = min(MIB, size // 4)
    offset = max(0, size // 2 - region // 2 + rnd.randrange(-4096, 4096))
    offset = min(offset, size - region)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(rnd.randbytes(region))
    return f"shard {region} bytes overwritten at {offset}"


def mutate(root: Path, seed: int) -> str:
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    rnd = _rng(seed, "mutate")
    added, img_msg = _mutate_images(root, rnd)
    parts = [img_msg]
    if (root / "annotations.csv").exists():
        parts.append(_mutate_csv(root / "annotations.csv", rnd, added))
    if (root / "captions.jsonl").exists():
        parts.append(_mutate_jsonl(root / "captions.jsonl", rnd, added))
    shards = sorted((root / "shards").glob("*.bin"))
    if shards:
        parts.append(_mutate_shard(shards[0], rnd))
    return f"mutated {root}: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# manyfiles / touch-one


def manyfiles(out: Path, count: int, seed: int, flat: bool, per_dir: int) -> str:
    if count < 1:
        raise UsageError("--count must be >= 1")
    if per_dir < 1:
        raise UsageError("--per-dir must be >= 1")
    _ensure_empty_out(out)
    rnd = _rng(seed, "manyfiles")
    width = max(7, len(str(count - 1)))
    dir_width = max(4, len(str((count - 1) // per_dir)))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    total = 0
    for start in range(0, count, per_dir):
        n = min(per_dir, count - start)
        if flat:
            folder = str(out)
        else:
            folder = os.path.join(out, f"d{start // per_dir:0{dir_width}d}")
            os.mkdir(folder)
        sizes = [rnd.randint(64, 512) for _ in range(n)]
        blob = rnd.randbytes(sum(sizes))  # slices of one random blob: every file is distinct
        pos = 0
        for i, size in enumerate(sizes):
            fd = os.open(os.path.join(folder, f"f{start + i:0{width}d}.bin"), flags, 0o644)
            try:
                os.write(fd, blob[pos : pos + size])
            finally:
                os.close(fd)
            pos += size
        total += pos
    layout = "flat" if flat else f"{per_dir} per directory"
    return f"wrote {count} files ({total / MIB:.1f} MiB, {layout}) into {out}"


def _pick_file(root: Path, seed: int) -> Path:
    """A deterministic regular file of the tree: seeded pick among the sorted files."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    dirs = [root]
    files: list[str] = []
    while dirs:  # breadth-first, sorted: stable for a given tree
        here = dirs.pop(0)
        subdirs = []
        with os.scandir(here) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    files.append(entry.path)
        dirs.extend(sorted(subdirs))
    if not files:
        raise UsageError(f"{root} holds no regular file")
    files.sort()
    return Path(files[_rng(seed, "touch-one").randrange(len(files))])


def touch_one(root: Path, seed: int, dry_run: bool) -> str:
    path = _pick_file(root, seed)
    rel = path.relative_to(root)
    if dry_run:
        return str(rel)
    old = path.stat()
    data = bytearray(path.read_bytes())
    n = min(64, len(data))
    data[:n] = bytes(b ^ 0xFF for b in data[:n])
    if not data:
        data = bytearray(b"touched\n")
    with open(path, "r+b") as f:  # same inode, same size (unless it was empty)
        f.write(data)
        f.truncate(len(data))
    new = path.stat()
    if new.st_mtime_ns == old.st_mtime_ns:
        os.utime(path, ns=(new.st_atime_ns, old.st_mtime_ns + 1))
    return f"touched {rel} ({len(data)} bytes)"


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset.py",
        description="Seeded synthetic datasets for the dsfs benchmarks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  scripts/dataset.py generate /var/tmp/ds --scale 0.01\n"
            "  scripts/dataset.py mutate /var/tmp/ds --seed 2\n"
            "  scripts/dataset.py manyfiles /var/tmp/many --count 1000000\n"
            "  scripts/dataset.py touch-one /var/tmp/many"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write a seeded ML-style dataset (~2 GiB at scale 1.0)")
    p.add_argument("out", type=Path, metavar="OUT", help="output directory (absent or empty)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size factor, 1.0 is ~2 GiB and ~19,000 images; 0.01 is ~20 MB (default 1.0)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: number of CPUs); the output does not depend on it",
    )

    p = sub.add_parser("mutate", help="turn a generated dataset into its next version, in place")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--seed", type=int, default=2, help="random seed (default 2)")

    p = sub.add_parser("manyfiles", help="write N small files (64-512 bytes each)")
    p.add_argument("out", type=Path, metavar="OUT", help="output directory (absent or empty)")
    p.add_argument("--count", type=int, required=True, help="number of files")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--flat", action="store_true", help="put every file in OUT itself")
    p.add_argument("--per-dir", type=int, default=1000, help="files per directory (default 1000)")

    p = sub.add_parser("touch-one", help="change the content of one file of a tree")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--seed", type=int, default=1, help="picks the file (default 1)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="only print the path (relative to DIR) that it would change",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            msg = generate(args.out, args.seed, args.scale, args.jobs)
        elif args.command == "mutate":
            msg = mutate(args.dir, args.seed)
        elif args.command == "manyfiles":
            msg = manyfiles(args.out, args.count, args.seed, args.flat, args.per_dir)
        else:
            msg = touch_one(args.dir, args.seed, args.dry_run)
    except UsageError as e:
        print(f"dataset.py: error: {e}", file=sys.stderr)
        return 2
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
