"""ALBEF's configuration: BLIP's (ViT + BERT sub-configs, projection size) plus where fusion starts.

Source (LAVIS commit 506965b): `lavis/configs/models/med_config_albef.json` (12 BERT layers, `fusion_layer` 6:
layers 0-5 read text alone, 6-11 also cross-attend to the image; no token-type embeddings) and
`albef_vqa.py::from_config` (the answer decoder: 6 layers, every one cross-attending to the question).
"""

from __future__ import annotations

from transformers import BlipConfig


class AlbefConfig(BlipConfig):
    model_type = "albef"

    fusion_layer: int = 6  # the first BERT layer that cross-attends to the image
    decoder_layers: int = 6  # the VQA answer decoder's layers (AlbefForQuestionAnswering only)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        layers = self.text_config.num_hidden_layers
        if not 0 < self.fusion_layer < layers:
            raise ValueError(f"fusion_layer {self.fusion_layer} must lie in 1..{layers - 1} (the text model has "
                             f"{layers} layers: some must read text alone, some must fuse)")
        if self.decoder_layers < 1:
            raise ValueError(f"decoder_layers must be at least 1, got {self.decoder_layers}")


__all__ = ["AlbefConfig"]
