"""Which samples each (rank, DataLoader worker) reads per epoch, and the iteration loop shared by
the training datasets.

Two modes:

- ``exact``: each epoch is a seeded permutation of all samples (the same on every rank), split
  over ``world_size x num_workers`` slots. DDP hangs when one rank runs out of batches before
  the others, so by default (``uneven="pad"``) the permutation wraps around until every slot has
  the same count; ``"drop"`` truncates it to a multiple of the world size instead (ranks equal,
  a few samples unseen); ``"none"`` reads every sample exactly once (ranks may differ by one).
  A sample found bad while reading is replaced by the slot's next one in ``pad``/``drop`` mode,
  so the counts stay equal.
- ``resampled``: webdataset's shard resampling, an endless stream per slot (shards drawn with
  replacement, seeded by slot and epoch); ``samples_per_epoch`` cuts it into epochs of that many
  samples per slot (``with_epoch``), as multi-node webdataset training usually does.

Per-sample randomness (frame, mask variant, posterior noise) comes from a generator seeded by
(seed, epoch, position), so a run is reproducible for a given seed, world size and worker count.
Each item carries ``sample_seed``, an integer drawn from the same generator after the sample is
built: training seeds its own per-sample draws (noise, timestep) with it. Call ``set_epoch``
before each epoch (``resume_at`` to start an ``exact`` epoch after the batches a run already
took), and do not use ``persistent_workers`` (workers would keep the epoch they were started with).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from anycharv.datasets.sample_reader import BadData, IndexedSample, SampleReader, SampleView, StreamView
from anycharv.errors import InputError

MODES = ("exact", "resampled")
UNEVEN = ("pad", "drop", "none")


def world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else ``torch.distributed``'s when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        live = dist.is_available() and dist.is_initialized()
        rank = (dist.get_rank() if live else 0) if rank is None else rank
        world_size = (dist.get_world_size() if live else 1) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError("rank", f"rank {rank} is not in a world of {world_size}", code="bad_rank")
    return int(rank), int(world_size)


def worker() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) outside one."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def epoch_order(num_samples: int, *, seed: int, epoch: int, world_size: int, num_workers: int,
                uneven: str = "pad", name: str = "dataset") -> np.ndarray:
    """Sample indices of one epoch, in order, padded (``pad``) or truncated (``drop``) as the mode
    asks; the same on every rank. InputError naming ``name`` when some rank would get nothing."""
    if uneven not in UNEVEN:
        raise InputError(name, f"uneven={uneven!r} is not one of {list(UNEVEN)}", code="bad_option")
    if num_samples < 1:
        raise InputError(name, "no samples to read", code="empty_dataset")
    if uneven != "pad" and num_samples < world_size:
        raise InputError(name, f"{num_samples} samples for {world_size} ranks: some rank would get none "
                         "(DDP would hang); use uneven='pad' or fewer ranks", code="too_few_samples")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples)
    if uneven == "pad":
        slots = world_size * num_workers
        order = np.resize(order, -(-num_samples // slots) * slots)  # np.resize repeats from the start
    elif uneven == "drop":
        order = order[: num_samples - num_samples % world_size]
    return order


def slot_positions(length: int, *, rank: int, world_size: int, worker: int, num_workers: int) -> range:
    """Positions of an epoch's order that (rank, worker) reads: rank ``r`` takes every
    ``world_size``-th position from ``r``, its workers share those in turn. Workers of different
    ranks get equal counts, so ranks get equal batch counts whenever their totals are equal."""
    return range(rank + worker * world_size, length, world_size * num_workers)


def stream_seed(*parts: int) -> int:
    """A 31-bit seed from integers (webdataset's generators want one int)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class _StreamGuard:
    """Error handler of the webdataset stream: unreadable shards go through the BadData policy
    (once per shard), and an endless run of failures stops instead of spinning forever."""

    def __init__(self, policy: BadData, urls: Sequence[str], limit: int):
        self.policy, self.urls, self.limit = policy, urls, limit
        self.streak, self.seen = 0, set()

    def handler(self, exn: Exception) -> bool:
        text = " ".join(str(a) for a in exn.args)
        url = next((u for u in self.urls if u in text), "shard stream")
        self.bad_shard(url, f"unreadable shard: {exn}", "corrupt_shard")
        return True

    def bad_shard(self, url: str, reason: str, code: str) -> None:
        if url not in self.seen or self.policy.strict:
            self.seen.add(url)
            self.policy.skip(InputError(url, reason, code=code))
        self.failed()

    def open_shards(self, src: Iterator[dict]) -> Iterator[dict]:
        """webdataset's url_opener for local shards, but each file is closed once read."""
        for item in src:
            try:
                stream = open(item["url"], "rb")
            except OSError as exn:
                self.bad_shard(item["url"], f"cannot open shard: {exn}", "missing_shard")
                continue
            try:
                yield {**item, "stream": stream}
            finally:
                stream.close()

    def failed(self) -> None:
        self.streak += 1
        if self.streak > self.limit:
            raise InputError("shard stream", f"{self.streak} bad samples/shards in a row and none usable; see the "
                             "warnings of logger anycharv.datasets", code="no_usable_samples")

    def ok(self) -> None:
        self.streak = 0


class ShardDataset(torch.utils.data.IterableDataset):
    """Base of the training datasets: checks the candidate samples against the index once (so
    every rank drops the same ones), then yields ``_build(view, rng)`` of this slot's samples.

    Options (every dataset takes them): ``mode`` and ``uneven`` (see the module doc; ``uneven`` is
    for ``exact`` only), ``seed``, ``rank``/``world_size`` (default: ``torch.distributed``'s at
    construction), ``samples_per_epoch`` (``resampled`` only: samples per slot and epoch, None for
    an endless stream), ``shuffle_buffer`` (``resampled`` only: samples mixed across shards in a
    buffer of that many raw samples; 0 keeps each shard's order, as the buffer costs memory).

    Subclasses give ``_fields(sample)`` (members the index must list), ``_wanted(field)`` (members
    a tar stream must keep) and ``_build``; ``_check`` may add checks (e.g. a join)."""

    def __init__(self, name: str, reader: SampleReader, samples: Sequence[IndexedSample], *, policy: BadData,
                 mode: str = "exact", uneven: str = "pad", seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, samples_per_epoch: int | None = None, shuffle_buffer: int = 0):
        super().__init__()
        if mode not in MODES:
            raise InputError(name, f"mode={mode!r} is not one of {list(MODES)}", code="bad_option")
        if mode == "exact" and samples_per_epoch is not None:
            raise InputError(name, "samples_per_epoch is for mode='resampled'; an exact epoch is every sample once",
                             code="bad_option")
        self.name, self.reader, self.policy = name, reader, policy
        self.mode, self.uneven, self.seed, self.epoch = mode, uneven, int(seed), 0
        self.skip_batches, self.skip_batch_size = 0, 1
        self.rank, self.world_size = world(rank, world_size)
        self.samples_per_epoch, self.shuffle_buffer = samples_per_epoch, shuffle_buffer
        self.samples: list[IndexedSample] = []
        for sample in samples:
            try:
                self._check(sample)
            except InputError as exc:
                policy.skip(exc)
                continue
            self.samples.append(sample)
        if mode == "exact":  # fail at construction, not in a worker, when the split cannot work
            epoch_order(len(self.samples), seed=0, epoch=0, world_size=self.world_size, num_workers=1,
                        uneven=uneven, name=name)
        elif not self.samples:
            raise InputError(name, "no samples to read", code="empty_dataset")
        self.urls = sorted({str(s.shard) for s in self.samples})
        self._keys = {(str(s.shard), s.clip_id) for s in self.samples}

    @property
    def stats(self) -> dict[str, int]:
        """Skipped samples per reason, counted in this process (each DataLoader worker counts its own)."""
        return self.policy.stats

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.skip_batches = 0

    def resume_at(self, epoch: int, batches: int, batch_size: int) -> None:
        """Start epoch ``epoch`` after its first ``batches`` batches of ``batch_size`` (``exact`` mode):
        a DataLoader takes batches from its workers in turn, so worker ``w`` of ``W`` skips the
        items of batches ``w, w + W, ...``. Skipped samples are not read (a bad one among them is
        not noticed, so its replacement is not skipped either)."""
        if self.mode != "exact" and batches:
            raise InputError(self.name, "resuming inside an epoch needs mode='exact'", code="bad_option")
        self.epoch, self.skip_batches, self.skip_batch_size = int(epoch), int(batches), int(batch_size)

    def _skipped(self, worker_id: int, num_workers: int) -> int:
        own = len(range(worker_id, self.skip_batches, num_workers))
        return own * self.skip_batch_size

    # -- subclass hooks ------------------------------------------------------------------------------
    def _fields(self, sample: IndexedSample) -> Sequence[str]:
        raise NotImplementedError

    def _wanted(self, field: str) -> bool:
        return True

    def _check(self, sample: IndexedSample) -> None:
        self.reader.check(sample, self._fields(sample))

    def _build(self, view: SampleView, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    # -- iteration -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker_id, num_workers = worker()
        if self.mode == "exact":
            samples = self._iter_exact(worker_id, num_workers)
        else:
            samples = self._iter_resampled(worker_id, num_workers)
        try:
            yield from samples
        finally:
            self._close()

    def _close(self) -> None:
        """Close the shard files opened for this pass (a pass ends, or is abandoned)."""
        self.reader.close()

    def _load(self, index: int, position: int, attempt: int) -> dict[str, Any] | None:
        rng = np.random.default_rng([self.seed, self.epoch, position, attempt])
        try:
            item = self._build(self.reader.view(self.samples[index]), rng)
        except InputError as exc:
            self.policy.skip(exc)
            return None
        item["sample_seed"] = int(rng.integers(0, 2**62))
        return item

    def _iter_exact(self, worker_id: int, num_workers: int) -> Iterator[dict[str, Any]]:
        order = epoch_order(len(self.samples), seed=self.seed, epoch=self.epoch, world_size=self.world_size,
                            num_workers=num_workers, uneven=self.uneven, name=self.name)
        positions = slot_positions(len(order), rank=self.rank, world_size=self.world_size, worker=worker_id,
                                   num_workers=num_workers)
        skip = self._skipped(worker_id, num_workers)
        if self.uneven == "none":
            for pos in positions[skip:]:
                item = self._load(int(order[pos]), pos, 0)
                if item is not None:
                    yield item
            return
        # pad/drop promise equal counts: a bad sample is replaced by the next good one of the slot.
        target, distinct = len(positions), {int(order[p]) for p in positions}
        bad: set[int] = set()
        produced = tried = min(skip, target)
        while produced < target:
            pos = positions[tried % target]
            index, attempt = int(order[pos]), tried // target
            tried += 1
            if index in bad:
                continue
            item = self._load(index, pos, attempt)
            if item is None:
                bad.add(index)
                if bad == distinct:
                    raise InputError(self.name, f"every sample of rank {self.rank} worker {worker_id} is bad data;"
                                     " see the warnings of logger anycharv.datasets", code="no_usable_samples")
                continue
            produced += 1
            yield item

    def _select_file(self, name: str) -> bool:
        return self._wanted(name.rsplit("/", 1)[-1].partition(".")[2])

    def _iter_resampled(self, worker_id: int, num_workers: int) -> Iterator[dict[str, Any]]:
        import webdataset as wds
        from webdataset.tariterators import group_by_keys, tar_file_expander

        slot = self.rank * num_workers + worker_id
        guard = _StreamGuard(self.policy, self.urls, limit=max(100, 10 * len(self.urls)))
        stages: list[Any] = [
            wds.ResampledShards(self.urls, seed=stream_seed(self.seed, self.epoch), worker_seed=lambda: slot,
                                deterministic=True),
            guard.open_shards,
            lambda src: tar_file_expander(src, handler=guard.handler, select_files=self._select_file),
            lambda src: group_by_keys(src, handler=guard.handler),
        ]
        if self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 100),
                                      seed=stream_seed(self.seed, self.epoch, slot, 1)))
        rng = np.random.default_rng([self.seed, self.epoch, slot, 2])
        stages.append(lambda src: self._build_stream(src, rng, guard))
        pipeline = wds.DataPipeline(*stages)
        if self.samples_per_epoch is not None:
            pipeline = pipeline.with_epoch(int(self.samples_per_epoch))
        return iter(pipeline)

    def _build_stream(self, src, rng: np.random.Generator, guard: _StreamGuard) -> Iterator[dict[str, Any]]:
        bad: set[tuple[str, str]] = set()
        for sample in src:
            key = (sample.get("__url__"), sample.get("__key__"))
            if key not in self._keys or key in bad:  # failed the index checks (counted then) or already seen bad
                guard.failed()
                continue
            try:
                item = self._build(StreamView(sample), rng)
            except InputError as exc:
                bad.add(key)
                self.policy.skip(exc)
                guard.failed()
                continue
            guard.ok()
            item["sample_seed"] = int(rng.integers(0, 2**62))
            yield item

