"""The CLIP normalisation every BLIP-2 checkpoint uses, as plain numbers.

Apart from `transforms` (which needs torch and PIL) so that the catalogue, and with it `mixkit models` and
`mixkit --help`, can name them without importing torch.
"""

from __future__ import annotations

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
