"""A folder written by `transformers` (model + Blip2Processor) predicts exactly what `transformers` predicts."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken
from transformers import BlipImageProcessor, Blip2ForConditionalGeneration, Blip2Processor

from mixkit.apps.predictor import Blip2Predictor
from mixkit.apps.tiny import DEFAULT_TEXTS, randomize_
from mixkit.data.tokenizers import newline_token_id, train_opt_tokenizer
from mixkit.models.blip2.tiny import tiny_blip2_config
from mixkit.models.catalogue import GenerationSettings


def test_transformers_saved_folder_gives_transformers_captions(tmp_path) -> None:
    tokenizer = train_opt_tokenizer(DEFAULT_TEXTS, tmp_path / "tok", vocab_size=300)
    config = tiny_blip2_config("opt", vocab_size=len(tokenizer))
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.text_config.eos_token_id = newline_token_id(tokenizer)
    reference = randomize_(Blip2ForConditionalGeneration(config), seed=4, std=0.15)
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, num_query_tokens=config.num_query_tokens)
    # transformers 5.24's processor expects an AddedToken where tokenizers saved with
    # extra_special_tokens give a str; the token itself is the same "<image>".
    processor.image_token = AddedToken("<image>", normalized=False, special=True)
    reference.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")

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

    predictor = Blip2Predictor.from_pretrained(str(tmp_path / "hf"))
    actual = [predictor.caption([image], prompt=prompt, settings=settings)[0] for image, prompt in zip(images, prompts)]
    assert actual == expected
    assert len(set(actual)) > 1
    batched = predictor._generate(images, prompts, settings, batch_size=3)
    assert batched == expected
