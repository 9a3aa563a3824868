"""What `mixkit eval vqa` and `mixkit eval caption` share: sharding, gathering, resume, reporting.

Under `torchrun` (RANK / WORLD_SIZE in the environment) every process takes the work units
`units[rank::world]`; all ranks then make the same collective calls in the same order, empty
shards included, so none waits forever on a peer (LAVIS #694). Rank 0 merges the gathered
records, keeps one per id (a padded sampler would otherwise count some items twice, LAVIS #270)
and sorts by id, so the result file is the same bytes whatever the number of processes.

Finished records are appended to `{output_dir}/partial/rank{r}.jsonl` every few batches; with
`resume`, records already there are reused and their ids are not generated again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from mixkit.data.transforms import ImageLoadError, load_image
from mixkit.distributed import shutdown_process_group
from mixkit.eval.result_files import ResultFileError
from mixkit.models.catalogue import GenerationSettings

if TYPE_CHECKING:  # the predictor pulls in the model stack; import it only when a run starts
    from mixkit.apps.predictor import Blip2Predictor

USAGE_ERROR = 2
PARTIAL_DIR = "partial"


class EvalInputError(ValueError):
    """Bad user input (a missing file, a malformed record): one line on stderr, exit code 2."""


# ---------------------------------------------------------------- processes


@dataclass(frozen=True)
class DistContext:
    """Where this process stands; `world_size` 1 and no process group for a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None) -> str | None:
        """One GPU per process under torchrun; otherwise what the user asked for."""
        if requested is None and self.initialized and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested


def init_distributed() -> DistContext:
    """Join the torchrun process group if there is one: NCCL with GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, True)


def close_distributed(ctx: DistContext) -> None:
    if ctx.initialized:
        shutdown_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.initialized:
        dist.barrier()


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` on every rank (so all ranks shard the same to-do list)."""
    if not ctx.initialized:
        return value
    box = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(records: list[dict], ctx: DistContext) -> list[dict]:
    """Every rank's records on every rank; `all_gather_object` works for empty lists too."""
    if not ctx.initialized:
        return list(records)
    boxes: list[list[dict] | None] = [None] * ctx.world_size
    dist.all_gather_object(boxes, records)
    return [record for box in boxes for record in (box or [])]


def shard(units: Sequence, ctx: DistContext) -> list:
    """This rank's units, by index: no padding, so no item is duplicated across ranks."""
    return list(units[ctx.rank :: ctx.world_size])


# ---------------------------------------------------------------- records


def merge_records(records: Sequence[dict], key: str) -> list[dict]:
    """One record per id (the first seen), sorted by id: the same whatever the sharding."""
    unique: dict[Hashable, dict] = {}
    for record in records:
        unique.setdefault(record[key], record)
    return [unique[k] for k in sorted(unique, key=_sort_key)]


def _sort_key(value: Hashable) -> tuple[int, Any]:
    # Ints and strings may mix in user files; order ints first, then strings, never compare across.
    return (0, value) if isinstance(value, int) else (1, str(value))


def write_json(path: Path, data: Any) -> None:
    """Written whole to a temporary name, then renamed, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    scratch.replace(path)


# ---------------------------------------------------------------- partial results


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


# ---------------------------------------------------------------- the loop


@dataclass(frozen=True)
class RunOptions:
    output_dir: Path
    key: str  # the id field of a result record: "question_id" or "image_id"
    batch_size: int = 8  # work units per call of `process`
    save_every: int = 10  # batches between partial-result flushes
    resume: bool = False


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    progress = tqdm(total=len(todo), disable=not ctx.is_main, file=sys.stderr, desc="eval", unit="item")
    try:
        for batch in chunks(mine, options.batch_size):
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


# ---------------------------------------------------------------- generation


def encode_images(predictor: Blip2Predictor, paths: Sequence[Path]) -> torch.Tensor:
    """Image-encoder outputs for a batch of files, computed once and reused for every prompt of an image."""
    pixels = torch.stack([predictor.transform(load_image(path)) for path in paths]).to(predictor.device)
    return predictor.model.encode_image(pixels)


@torch.no_grad()
def generate_texts(
    predictor: Blip2Predictor, image_embeds: torch.Tensor, prompts: Sequence[str], settings: GenerationSettings
) -> list[str]:
    """One text per (image embedding, prompt) row, decoded and stripped as `Blip2Predictor` does."""
    tokens = predictor.tokenizer(
        list(prompts), padding=True, padding_side=predictor.padding_side, return_tensors="pt"
    ).to(predictor.device)
    ids = predictor.model.generate(
        input_ids=tokens.input_ids,
        attention_mask=tokens.attention_mask,
        image_embeds=image_embeds,
        **predictor.generation_kwargs(settings),
    )
    return [text.strip() for text in predictor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def load_predictor(args: argparse.Namespace, ctx: DistContext) -> Blip2Predictor:
    from mixkit.apps.predictor import Blip2Predictor

    try:
        return Blip2Predictor.from_pretrained(args.model, device=ctx.device(args.device), fp32=args.fp32)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise EvalInputError(f"--model {args.model}: {error}") from None


def override_settings(base: GenerationSettings, args: argparse.Namespace) -> GenerationSettings:
    from mixkit.apps.predictor import settings_with_overrides

    try:
        return settings_with_overrides(base, args.num_beams, args.max_new_tokens, args.min_new_tokens,
                                       args.length_penalty)
    except ValueError as error:
        raise EvalInputError(str(error)) from None


# ---------------------------------------------------------------- reporting


def run_metadata(args: argparse.Namespace, ctx: DistContext, settings: GenerationSettings) -> dict[str, Any]:
    """What every metrics file records about how it was made (settings, layout, library versions)."""
    return {"generation": asdict(settings), "batch_size": args.batch_size, "world_size": ctx.world_size,
            "versions": versions()}


def versions() -> dict[str, str]:
    from mixkit import library_versions

    return library_versions()


def format_table(rows: Sequence[tuple[str, Any]], title: str) -> str:
    """A two-column table for the terminal; floats to 2 decimals."""
    cells = [(name, f"{value:.2f}" if isinstance(value, float) else str(value)) for name, value in rows]
    width = max([len(title)] + [len(name) for name, _ in cells])
    lines = [title, "-" * (width + 12)]
    lines += [f"{name:<{width}}  {value:>10}" for name, value in cells]
    return "\n".join(lines)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, generation overrides, batching, output and resume: the same for both tasks."""
    parser.add_argument("--model", required=True, help="catalogue name (see `mixkit models`) or a checkpoint folder")
    parser.add_argument("--output-dir", required=True, type=Path, help="where result, metrics and partial files go")
    parser.add_argument("--prompt", default=None, help="prompt (VQA: a template with {} for the question)")
    parser.add_argument("--num-beams", type=int, default=None, help="beam width (default: the reference's, 5)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="most new tokens (default: reference)")
    parser.add_argument("--min-new-tokens", type=int, default=None, help="fewest new tokens (default: reference)")
    parser.add_argument("--length-penalty", type=float, default=None, help="beam length penalty (default: reference)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--save-every", type=int, default=10, help="batches between partial-result saves (default 10)")
    parser.add_argument("--resume", action="store_true", help="reuse the partial results in --output-dir")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--fp32", action="store_true", help="keep the frozen ViT and LLM in fp32 on GPU")


def check_positive(args: argparse.Namespace) -> None:
    for name in ("num_beams", "max_new_tokens", "batch_size", "save_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise EvalInputError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    if args.min_new_tokens is not None and args.min_new_tokens < 0:
        raise EvalInputError(f"--min-new-tokens: must be >= 0, got {args.min_new_tokens}")


def load_json_file(path: Path, what: str) -> Any:
    if not Path(path).is_file():
        raise EvalInputError(f"{what}: {path}: file not found")
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvalInputError(f"{what}: {path}: not valid JSON ({error})") from None


def check_images_exist(paths: Sequence[Path]) -> None:
    """Before the model loads: a missing image fails in a second, not an hour into the run."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise EvalInputError(f"{len(missing)} image file(s) not found: {shown}")


def run_evaluation(
    command: str,
    evaluate: Callable[[argparse.Namespace, DistContext], dict | None],
    score_table: Callable[[dict], str],
    args: argparse.Namespace,
    input_errors: tuple[type[Exception], ...],
) -> int:
    """Run one `mixkit eval` command: rank 0 prints the table (stderr) and the metrics JSON (stdout);
    bad input is one line on stderr and exit code 2. The process group is always torn down."""
    ctx = init_distributed()
    try:
        metrics = evaluate(args, ctx)
    except (EvalInputError, ResultFileError, ImageLoadError, *input_errors) as error:
        return report_error(command, error)
    finally:
        close_distributed(ctx)
    if metrics is not None:
        print(score_table(metrics), file=sys.stderr)
        print(json.dumps(metrics))
    return 0


def standalone_main(command: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                    run: Callable[[argparse.Namespace], int], description: str,
                    argv: Sequence[str] | None = None) -> int:
    """`python -m mixkit.eval.<task>` (what torchrun launches): the same options as `mixkit eval <task>`."""
    parser = argparse.ArgumentParser(prog=f"mixkit eval {command}", description=description)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def report_error(command: str, error: Exception) -> int:
    print(f"mixkit eval {command}: error: {error}", file=sys.stderr)
    return USAGE_ERROR
