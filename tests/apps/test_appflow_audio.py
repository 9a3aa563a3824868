"""The audio apps on tiny random models: Whisper text = `generate`, LLM text = `generate`, AudioLDM audio = the
`diffusers` pipeline, MusicGen and VITS audio = the `transformers` models with the same seed; WAV in and out."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch  # noqa: E402

from mixkit.apps.appflow import Appflow  # noqa: E402
from mixkit.apps.appflow.media import AudioClip, write_media  # noqa: E402
from mixkit.apps.appflow.step import StepInputError  # noqa: E402
from mixkit.apps.appflow.steps.audio import fill_template, read_wav, resample  # noqa: E402
from mixkit.apps.appflow.tiny_audio import build_tiny_musicgen, build_tiny_vits, build_tiny_whisper  # noqa: E402
from mixkit.apps.appflow.tiny_generation import build_tiny_audioldm, build_tiny_causal_lm  # noqa: E402


def _speech(rate: int = 8000, seconds: float = 0.5) -> AudioClip:
    time = np.arange(int(rate * seconds)) / rate
    return AudioClip(0.3 * np.sin(2 * np.pi * 220 * time) + 0.05 * np.random.RandomState(0).randn(len(time)), rate)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    build_tiny_whisper(root / "whisper")
    build_tiny_causal_lm(root / "llm")
    build_tiny_vits(root / "vits")
    return root


def _whisper_text(folder, clip: AudioClip) -> str:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    features = processor(resample(clip, 16000), sampling_rate=16000, return_tensors="pt").input_features
    return processor.batch_decode(model.generate(features), skip_special_tokens=True)[0].strip()


def _llm_text(folder, prompt: str, max_new_tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_audio2caption_from_a_wav_file_equals_whisper_then_llm_generate(folders, tmp_path):
    clip = _speech()
    path = write_media(clip, tmp_path, "question")
    app = Appflow("audio2caption", models=[str(folders / "whisper"), str(folders / "llm")], device="cpu",
                  max_new_tokens=6)
    out = app(audio=str(path), prompt="a dog and {} .")
    heard = _whisper_text(folders / "whisper", read_wav(path))
    assert out["asr_text"] == heard
    assert out["prompt"] == f"a dog and {heard} ."
    assert out["result"] == _llm_text(folders / "llm", out["prompt"], 6)


def test_audio_chat_speaks_the_llm_reply_as_vits_does(folders):
    from transformers import AutoTokenizer, VitsModel

    app = Appflow("audio_chat", models=[str(folders / "whisper"), str(folders / "llm"), str(folders / "vits")],
                  device="cpu", max_new_tokens=6)
    # The template ends on a word: a random tiny LM repeats the last token, so the reply is words VITS can say.
    out = app(audio=_speech(), prompt="{} a dog and a cat", seed=7)
    assert out["reply"] == _llm_text(folders / "llm", out["asr_text"] + " a dog and a cat", 6)
    tokenizer = AutoTokenizer.from_pretrained(folders / "vits")
    model = VitsModel.from_pretrained(folders / "vits").eval()
    torch.manual_seed(7)
    with torch.no_grad():
        waveform = model(**tokenizer(out["reply"], return_tensors="pt")).waveform[0].numpy()
    assert isinstance(out["result"], AudioClip) and out["result"].sampling_rate == 16000
    np.testing.assert_array_equal(out["result"].samples, waveform)


def test_music_generation_audioldm_equals_the_diffusers_pipeline(audioldm, tmp_path):
    from diffusers import AudioLDMPipeline

    app = Appflow("music_generation", models=[str(audioldm)], device="cpu")
    assert app.params["num_inference_steps"] == 10 and app.params["audio_length_in_s"] == 5.0  # PaddleMIX's
    clip = app(prompt="a calm piano melody", num_inference_steps=2, audio_length_in_s=0.032, seed=1)["result"]
    pipeline = AudioLDMPipeline.from_pretrained(audioldm)
    audio = pipeline("a calm piano melody", num_inference_steps=2, audio_length_in_s=0.032, guidance_scale=2.5,
                     generator=torch.Generator("cpu").manual_seed(1)).audios[0]
    assert clip.sampling_rate == 16000 and len(clip.samples) == 512
    np.testing.assert_array_equal(clip.samples, audio)
    path = write_media(clip, tmp_path, "result")
    assert read_wav(path).sampling_rate == 16000 and len(read_wav(path).samples) == 512


def test_music_generation_musicgen_equals_generate_with_the_seed(tmp_path):
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    build_tiny_musicgen(tmp_path / "musicgen")
    app = Appflow("music_generation", models=[str(tmp_path / "musicgen")], device="cpu")
    clip = app(prompt="a red circle", audio_length_in_s=0.1, seed=3)["result"]
    processor = AutoProcessor.from_pretrained(tmp_path / "musicgen")
    model = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "musicgen").eval()
    torch.manual_seed(3)
    values = model.generate(**processor(text=["a red circle"], padding=True, return_tensors="pt"),
                            max_new_tokens=10, guidance_scale=2.5)  # 0.1 s at 100 frames/s; the app's guidance
    assert clip.sampling_rate == 4000
    np.testing.assert_array_equal(clip.samples, values[0, 0].numpy())


def test_resample_keeps_a_band_limited_tone():
    rate, tone = 8000, 250  # a whole number of periods in the clip: Fourier resampling is exact
    time = np.arange(rate) / rate
    clip = AudioClip(np.sin(2 * np.pi * tone * time), rate)
    expected = np.sin(2 * np.pi * tone * np.arange(16000) / 16000)
    np.testing.assert_allclose(resample(clip, 16000), expected, atol=1e-4)
    assert resample(clip, rate) is clip.samples


def test_wav_round_trip_and_bad_audio(tmp_path):
    clip = _speech(rate=22050, seconds=0.1)
    back = read_wav(write_media(clip, tmp_path, "clip"))
    assert back.sampling_rate == 22050
    np.testing.assert_allclose(back.samples, np.clip(clip.samples, -1, 1), atol=3 / 32768)  # 16-bit steps
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(StepInputError, match="bad.wav as a PCM WAV"):
        read_wav(tmp_path / "bad.wav")


def test_prompt_template_errors_name_the_key(folders):
    assert fill_template("Summarise: {}", "hi") == "Summarise: hi"
    with pytest.raises(StepInputError, match="'prompt' is a template"):
        fill_template('{"json": {}}', "hi")
    app = Appflow("audio2caption", models=[str(folders / "whisper"), str(folders / "llm")], device="cpu")
    with pytest.raises(StepInputError, match="'audio' must be an AudioClip or a WAV file path"):
        app(audio=[0.0, 0.1], prompt="{}")
    with pytest.raises(StepInputError, match="lasts 31.0 s"):
        app(audio=AudioClip(np.zeros(31 * 100), 100))


@pytest.fixture(scope="module")
def audioldm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audioldm")
    build_tiny_audioldm(folder)
    return folder


def test_app_run_command_writes_the_music_as_wav(audioldm, tmp_path, capsys):
    import json

    from mixkit.cli import main

    args = ["app", "run", "music_generation", "--models", str(audioldm), "--prompt", "rain",
            "--num_inference_steps", "2", "--audio_length_in_s", "0.016", "--seed", "0", "--json"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["result"].endswith("result.wav")
    clip = read_wav(record["result"])
    assert clip.sampling_rate == 16000 and len(clip.samples) == 256
    assert main([*args, "--output", str(tmp_path / "b")]) == 0  # one seed, one sound
    again = read_wav(json.loads(capsys.readouterr().out)["result"])
    np.testing.assert_array_equal(clip.samples, again.samples)
