"""Run an evaluation over `torchrun` processes: shard the work, save partial results, resume, merge.

Every process takes the work units `units[rank::world]`; all ranks then make the same collective calls in the
same order, empty shards included. Rank 0 merges the gathered records, keeps one per id (a padded sampler
would otherwise count some items twice, LAVIS #270) and sorts by id, so the result file is the same bytes
whatever the number of processes.

Finished records are appended to `{output_dir}/partial/rank{r}.jsonl` every few batches; with `resume`,
records already there are reused and their ids are not generated again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from mixkit.pipelines.common import batches
from mixkit.utils.distributed import DistContext, broadcast, gather, shard
from mixkit.utils.progress import progress_bar

PARTIAL_DIR = "partial"


def merge_records(records: Sequence[dict], key: str) -> list[dict]:
    """One record per id (the first seen), sorted by id: the same whatever the sharding."""
    unique: dict[Hashable, dict] = {}
    for record in records:
        unique.setdefault(record[key], record)
    return [unique[k] for k in sorted(unique, key=_sort_key)]


def _sort_key(value: Hashable) -> tuple[int, Any]:
    # Ints and strings may mix in user files; order ints first, then strings, never compare across.
    return (0, value) if isinstance(value, int) else (1, str(value))


def partial_dir(output_dir: Path) -> Path:
    return Path(output_dir) / PARTIAL_DIR


def read_partial(output_dir: Path, key: str) -> list[dict]:
    """Every record any rank has saved; a torn last line (killed mid-write) is ignored."""
    records: list[dict] = []
    for path in sorted(partial_dir(output_dir).glob("rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and key in record:
                records.append(record)
    return records


def prepare_partial(output_dir: Path, key: str, resume: bool, ctx: DistContext) -> list[dict]:
    """Records already done (empty unless `resume`), the same list on every rank."""
    if ctx.is_main:
        partial_dir(output_dir).mkdir(parents=True, exist_ok=True)
        if not resume:
            for path in partial_dir(output_dir).glob("rank*.jsonl"):
                path.unlink()
    done = read_partial(output_dir, key) if ctx.is_main and resume else []
    # Rank 0 reads before anyone appends; the broadcast both shares and orders that.
    return broadcast(done, ctx)


class PartialWriter:
    """Appends this rank's finished records to `partial/rank{r}.jsonl` every `every` batches."""

    def __init__(self, output_dir: Path, rank: int, every: int):
        self.path = partial_dir(output_dir) / f"rank{rank}.jsonl"
        self.every = max(1, every)
        self.pending: list[dict] = []
        self.batches = 0

    def add(self, records: Sequence[dict]) -> None:
        self.pending.extend(records)
        self.batches += 1
        if self.batches % self.every == 0:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in self.pending)
        self.pending = []


@dataclass(frozen=True)
class RunOptions:
    output_dir: Path
    key: str  # the id field of a result record: "question_id" or "image_id"
    batch_size: int = 8  # work units per call of `process`
    save_every: int = 10  # batches between partial-result flushes
    resume: bool = False
    desc: str = "eval"  # the progress bar's label


def run_sharded(
    units: Sequence,
    unit_ids: Callable[[Any], list[Hashable]],
    process: Callable[[Sequence], list[dict]],
    options: RunOptions,
    ctx: DistContext,
    restrict: Callable[[Any, set[Hashable]], Any] | None = None,
) -> list[dict] | None:
    """Run `process` over this rank's share of `units`; the merged, sorted records on rank 0, None elsewhere.

    `unit_ids(unit)` names the result ids a unit yields; with `resume`, units whose ids are all done
    are skipped and `restrict(unit, done_ids)` trims the rest (e.g. the answered questions of an image).
    """
    done = prepare_partial(options.output_dir, options.key, options.resume, ctx)
    done_ids = {record[options.key] for record in done}
    todo = [u for u in units if not set(unit_ids(u)) <= done_ids]
    if restrict is not None and done_ids:
        todo = [restrict(u, done_ids) for u in todo]
    mine = shard(todo, ctx)
    writer = PartialWriter(options.output_dir, ctx.rank, options.save_every)
    records: list[dict] = []
    progress = progress_bar(total=len(todo), disable=not ctx.is_main, desc=options.desc, unit="item")
    try:
        for batch in batches(mine, options.batch_size):
            out = process(batch)
            records.extend(out)
            writer.add(out)
            # Rank 0 sees only its own share; scale so the bar estimates the whole run.
            progress.update(len(batch) * ctx.world_size)
    finally:
        writer.flush()
        progress.close()
    gathered = gather(records, ctx)
    return merge_records(done + gathered, options.key) if ctx.is_main else None
