"""WebDataset-style tar shards, for collections too big for one disk.

``write_shards`` packs a manifest's photos into ``shard-000000.tar``, ... with two members per photo,
``NNNNNNNNN.jpg`` (the original bytes) and ``NNNNNNNNN.json`` (the manifest line without its path), plus
``index.json`` (shards and their photo counts, so a trainer knows an epoch's length). ``ShardStream``
reads them back as an ``IterableDataset``: each DDP rank (and each DataLoader worker) reads its own subset
of shards, in a fresh order every epoch, through a shuffle buffer. Shards can live on any file system the
trainer mounts; only one shard per reader is open at a time.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from contracts.photos import decode
from trainer.data.manifest import MAX_PIXELS, Encoder, read_manifest, read_photo_bytes


def write_shards(manifest: Path, out_dir: Path, photos_per_shard: int = 1000) -> list[Path]:
    """Pack the photos of ``manifest`` into tar shards under ``out_dir``; unreadable files are left out."""
    records = read_manifest(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    tar: tarfile.TarFile | None = None
    key = 0
    for record in records:
        try:
            data = read_photo_bytes(record.source)
        except Exception:  # noqa: BLE001 - the reader skips what it cannot read; so does the writer
            continue
        if tar is None or shards[-1]["count"] >= photos_per_shard:
            if tar is not None:
                tar.close()
            name = f"shard-{len(shards):06d}.tar"
            shards.append({"name": name, "count": 0})
            tar = tarfile.open(out_dir / name, "w")
        meta = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in (
                ("user_tags", record.user_tags),
                ("labels", record.labels),
                ("split", record.split),
                ("owner", record.owner),
                ("source", record.source),
            )  # fmt: skip
            if v is not None
        }
        for suffix, payload in (("jpg", data), ("json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(f"{key:09d}.{suffix}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        shards[-1]["count"] += 1
        key += 1
    if tar is not None:
        tar.close()
    (out_dir / "index.json").write_text(json.dumps({"shards": shards}, indent=1) + "\n")
    return [out_dir / s["name"] for s in shards]


def shard_index(shard_dir: Path) -> list[tuple[Path, int]]:
    """(shard path, photo count) of every shard listed in ``shard_dir/index.json``."""
    index = shard_dir / "index.json"
    if not index.is_file():
        raise ValueError(f"{shard_dir} has no index.json: write shards with trainer.data.shards.write_shards")
    return [(shard_dir / s["name"], int(s["count"])) for s in json.loads(index.read_text())["shards"]]


def _samples(shard: Path) -> Iterator[tuple[bytes, dict]]:
    """(image bytes, metadata) pairs of one shard, matched by key."""
    pending: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, suffix = member.name.rpartition(".")
            entry = pending.setdefault(key, {})
            entry[suffix] = tar.extractfile(member).read()  # type: ignore[union-attr]
            if "jpg" in entry and "json" in entry:
                del pending[key]
                yield entry["jpg"], json.loads(entry["json"])


class ShardStream(IterableDataset):
    """(uint8 HWC image, target) samples from tar shards; ``target_key`` picks user tags or clean labels.

    Photos that fail to decode are skipped and counted in ``self.skipped`` (per reader process).
    """

    def __init__(
        self,
        shard_dir: Path,
        encode: Encoder,
        size: int,
        target_key: str = "user_tags",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        buffer: int = 256,
    ) -> None:
        self.shards = [path for path, _ in shard_index(shard_dir)]
        self.encode, self.size, self.target_key = encode, size, target_key
        self.seed, self.rank, self.world_size, self.buffer = seed, rank, world_size, buffer
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """A different shard order and shuffle each epoch, the same on every rank."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        readers = self.world_size * (worker.num_workers if worker else 1)
        reader = self.rank * (worker.num_workers if worker else 1) + (worker.id if worker else 0)
        rng = random.Random(self.seed * 1000 + self.epoch)
        order = list(self.shards)
        rng.shuffle(order)
        buffer: list[tuple[torch.Tensor, torch.Tensor]] = []
        for shard in order[reader::readers]:
            for data, meta in _samples(shard):
                try:
                    image = decode(data, (self.size, self.size), max_pixels=MAX_PIXELS)
                except Exception:  # noqa: BLE001 - a bad photo in a shard is skipped, not fatal
                    self.skipped += 1
                    continue
                target = self.encode(list(meta.get(self.target_key, [])))
                buffer.append((torch.from_numpy(np.array(image)), torch.from_numpy(target)))
                if len(buffer) >= self.buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer
