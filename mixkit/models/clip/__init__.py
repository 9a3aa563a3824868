"""mixkit.models.clip: the CLIP family (run on `transformers`' CLIPModel; this folder holds its catalogue)."""
