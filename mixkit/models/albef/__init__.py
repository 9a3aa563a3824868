"""ALBEF (Li et al. 2021, "Align before Fuse"): a ViT and a BERT whose first layers read text alone and whose last
layers fuse it with the image; ITC with momentum distillation, ITM with hard negatives, MLM (docs/albef.md)."""
