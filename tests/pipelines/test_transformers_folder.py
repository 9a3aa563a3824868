"""A folder written by `transformers` (model + Blip2Processor) predicts exactly what `transformers` predicts."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mixkit.pipelines.blip2 import Blip2Pipeline
from mixkit.testing import save_transformers_blip2
from mixkit.models.settings import GenerationSettings


def test_transformers_saved_folder_gives_transformers_captions(tmp_path) -> None:
    reference, processor = save_transformers_blip2(tmp_path / "hf")
    tokenizer, config = processor.tokenizer, reference.config

    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (24 + 9 * i, 40, 3), dtype=np.uint8))
              for i in range(3)]
    prompts = ["a large", "a small red", "a"]
    settings = GenerationSettings(num_beams=3, max_new_tokens=6, min_new_tokens=2, length_penalty=1.0)

    expected = []
    for image, prompt in zip(images, prompts):
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        ids = reference.generate(**inputs, num_beams=3, max_new_tokens=6, min_new_tokens=2, length_penalty=1.0,
                                 eos_token_id=config.text_config.eos_token_id)
        new = ids[:, inputs.input_ids.shape[1]:]
        expected.append(tokenizer.decode(new[0], skip_special_tokens=True).strip())

    predictor = Blip2Pipeline.from_pretrained(str(tmp_path / "hf"))
    actual = [predictor.caption([image], prompt=prompt, settings=settings)[0] for image, prompt in zip(images, prompts)]
    assert actual == expected
    assert len(set(actual)) > 1
    batched = predictor.generate(predictor.encode_images(images), prompts, settings)
    assert batched == expected
