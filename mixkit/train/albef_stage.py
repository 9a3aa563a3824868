"""`mixkit train albef-retrieval | albef-pretrain`: the parts of an ALBEF run for the shared loop.

| stage | architecture trained | loss (`mixkit.train.albef_task`) | records |
| --- | --- | --- | --- |
| `albef-retrieval` | `AlbefForRetrieval` | ITC (distilled, queues, image-id positives) + ITM | captions with image ids |
| `albef-pretrain` | `AlbefForPreTraining` | ITC (distilled, queues) + ITM + MLM (distilled) | captions |

The starting checkpoint is an ALBEF folder (mixkit's, e.g. a LAVIS `.pth` converted with
`mixkit.models.albef.convert_lavis`); LAVIS fine-tunes retrieval from its pretraining checkpoint, so an
`AlbefForPreTraining` folder can start `albef-retrieval` (its MLM head is left out, `load_albef_for`). The whole
model trains, as in LAVIS (`--freeze_vit true` freezes the ViT). Captions are padded to `--max_text_length` (LAVIS
`max_txt_len` 30). `--queue_size`, `--momentum` and `--alpha` are the momentum-distillation options (LAVIS's
albef_retrieval_coco.yaml: 65536, 0.995, 0.4). Checkpoints carry the momentum model, the queues and the alpha
ramp (`task_state.safetensors`), so a resumed run continues them. Not done: LAVIS's RandAugment train transform.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from transformers import AutoTokenizer

from mixkit.data.bad_images import collate_skipping_none
from mixkit.models.albef.config import AlbefConfig
from mixkit.models.albef.modeling import ALBEF_ARCHITECTURES, AlbefModel
from mixkit.models.blip.modeling import architecture_of
from mixkit.models.hub import check_checkpoint_dir, resolve_checkpoint
from mixkit.models.serialization import load_weights_strict, read_weights
from mixkit.train.albef_task import MLM_PROBABILITY, AlbefBatch, AlbefCollator, AlbefTask
from mixkit.train.arguments import DataArguments, ModelArguments
from mixkit.train.blip_stage import freeze_vit_if_asked, samples_per_epoch
from mixkit.train.stages import StageParts, _dataset, _save_extras

logger = logging.getLogger(__name__)

ARCHITECTURE_OF_STAGE = {"albef-retrieval": "AlbefForRetrieval", "albef-pretrain": "AlbefForPreTraining"}


def load_albef_for(directory: Path, architecture: str) -> AlbefModel:
    """The checkpoint as `architecture`: itself, or a pretraining folder without its MLM head (for retrieval)."""
    config = AlbefConfig.from_pretrained(directory)
    source = architecture_of(config, ALBEF_ARCHITECTURES)
    if source == architecture:
        return AlbefModel.from_pretrained(directory)
    if (source, architecture) != ("AlbefForPreTraining", "AlbefForRetrieval"):
        raise ValueError(f"{directory}: a {source} checkpoint cannot start {architecture} training (start from "
                         f"an AlbefForPreTraining or {architecture} folder)")
    state = {key: value for key, value in read_weights(directory).items() if not key.startswith("mlm_head.")}
    logger.info("%s: the MLM head of the pretraining checkpoint is not used for retrieval", directory)
    model = AlbefModel(config, architecture)
    load_weights_strict(model, state)
    return model


def build_albef_stage(stage: str, model_args: ModelArguments, data: DataArguments, seed: int = 42) -> StageParts:
    if stage not in ARCHITECTURE_OF_STAGE:
        raise ValueError(f"unknown ALBEF stage {stage!r}; known: {', '.join(ARCHITECTURE_OF_STAGE)}")
    model_dir = resolve_checkpoint(model_args.model_name_or_path)
    if not check_checkpoint_dir(model_dir).tokenizer:
        raise FileNotFoundError(f"{model_dir}: no tokenizer files (ALBEF's BERT tokenizer)")
    model = load_albef_for(model_dir, ARCHITECTURE_OF_STAGE[stage])
    freeze_vit_if_asked(model, model_args, stage)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), config=model.config)
    dataset = _dataset(data, seed)
    retrieval = stage == "albef-retrieval"
    task = AlbefTask(model.train(), model_args.queue_size, model_args.momentum, model_args.alpha,
                     samples_per_epoch(dataset), use_image_ids=retrieval, seed=seed)
    collator = AlbefCollator(tokenizer, data.max_text_length, use_image_ids=retrieval,
                             mlm_probability=None if retrieval else MLM_PROBABILITY, seed=seed)
    return StageParts(
        model=model,
        task=task,
        batch_type=AlbefBatch,
        collator=partial(collate_skipping_none, collate_fn=collator),
        dataset=dataset,
        save_extras=partial(_save_extras, tokenizer, data.image_size, None),
        base_model=None,  # every weight trains: checkpoints are complete folders
    )


__all__ = ["ARCHITECTURE_OF_STAGE", "build_albef_stage", "load_albef_for"]
