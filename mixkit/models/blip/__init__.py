"""BLIP (Li et al. 2022): ViT + BERT with ITC, ITM and LM heads."""
