"""Audio steps on `transformers`: Whisper speech recognition, VITS (MMS-TTS) text-to-speech and MusicGen.

Thin wrappers: decode the audio input (an `AudioClip`, or a WAV file read with the standard library), run the
model's own processor and `generate` / forward, write the text or an `AudioClip`. In PaddleMIX's AppFlow the ASR
task (`audio_asr.py`, PaddleSpeech's Whisper) formats the `prompt` template with the transcript (`.format`) for
the next task; the same happens here, and the transcript itself is kept under `asr_text`.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixkit.apps.appflow.media import AudioClip
from mixkit.apps.appflow.step import Step, StepInputError
from mixkit.apps.appflow.steps.diffusion import state_text
from mixkit.pipelines.common import pick_device


def read_wav(path: str | Path) -> AudioClip:
    """A PCM WAV file (8/16/32-bit, any channel count, averaged to mono) as an `AudioClip` in [-1, 1]."""
    try:
        with wave.open(str(path), "rb") as source:
            width, channels, rate = source.getsampwidth(), source.getnchannels(), source.getframerate()
            frames = source.readframes(source.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise StepInputError(f"'audio': cannot read {path} as a PCM WAV file ({error})") from None
    if width not in (1, 2, 4):
        raise StepInputError(f"'audio': {path} has {8 * width}-bit samples; 8, 16 or 32-bit PCM is read")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    samples = np.frombuffer(frames, dtype=dtype).astype(np.float64)
    if width == 1:
        samples -= 128  # 8-bit WAV is unsigned
    samples = samples.reshape(-1, channels).mean(axis=1) / float(2 ** (8 * width - 1))
    return AudioClip(samples=samples, sampling_rate=rate)


def resample(clip: AudioClip, rate: int) -> np.ndarray:
    """`clip` at `rate` Hz by Fourier resampling (band-limited, as scipy.signal.resample), so any WAV's rate
    reaches the 16 kHz Whisper's feature extractor demands without an extra dependency."""
    if clip.sampling_rate == rate:
        return clip.samples
    length = max(1, round(len(clip.samples) * rate / clip.sampling_rate))
    spectrum = np.fft.rfft(clip.samples.astype(np.float64))
    kept = np.zeros(length // 2 + 1, dtype=complex)
    count = min(len(kept), len(spectrum))
    kept[:count] = spectrum[:count]
    return (np.fft.irfft(kept, n=length) * (length / len(clip.samples))).astype(np.float32)


def state_audio(state: dict[str, Any], key: str = "audio") -> AudioClip:
    value = state[key]
    if isinstance(value, AudioClip):
        return value
    if isinstance(value, str) or hasattr(value, "__fspath__"):
        return read_wav(value)
    raise StepInputError(f"{key!r} must be an AudioClip or a WAV file path, got {type(value).__name__}")


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """torch's global generators seeded with `seed` inside the block and restored after it (VITS and MusicGen
    draw their noise from the global generator; they take no `torch.Generator`). None: left as they are."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(int(seed))
        yield


def fill_template(template: str, text: str) -> str:
    """PaddleMIX's `prompt.format(asr_text)`; a template with other braces is an error naming the key."""
    try:
        return template.format(text)
    except (IndexError, KeyError, ValueError) as error:
        raise StepInputError(f"'prompt' is a template that receives the transcript at {{}}; {template!r} cannot "
                             f"be formatted ({type(error).__name__}: {error}); double literal braces: {{{{ }}}}"
                             ) from None


class WhisperAsrStep(Step):
    """`audio` -> `asr_text` (Whisper's transcript) and `prompt` = the `prompt` template formatted with it
    ("{}" when none is given). `language` and `task` go to `generate` when set (else the model's defaults)."""

    reads = ("audio",)
    writes = ("asr_text", "prompt")

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.torch_device = pick_device(device)
        self.processor = WhisperProcessor.from_pretrained(model_dir)
        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
        self.model.to(self.torch_device).eval()

    @torch.no_grad()
    def transcribe(self, clip: AudioClip, language: str | None = None, task: str | None = None) -> str:
        rate = self.processor.feature_extractor.sampling_rate
        if len(clip.samples) > 30 * clip.sampling_rate:
            raise StepInputError(f"'audio' lasts {len(clip.samples) / clip.sampling_rate:.1f} s; Whisper reads 30 s "
                                 "windows: split the recording")
        features = self.processor(resample(clip, rate), sampling_rate=rate, return_tensors="pt").input_features
        options = {name: value for name, value in (("language", language), ("task", task)) if value is not None}
        ids = self.model.generate(features.to(self.torch_device), **options)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        text = self.transcribe(state_audio(state), params.get("language"), params.get("task"))
        return {**state, "asr_text": text, "prompt": fill_template(state.get("prompt") or "{}", text)}


class TextToSpeechStep(Step):
    """The text reply in `result` -> `reply` (that text) and `result` (a VITS / MMS-TTS `AudioClip`). VITS draws
    its durations and prior noise at random; `seed` fixes them."""

    reads = ("result",)
    writes = ("reply", "result")

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import AutoTokenizer, VitsModel

        self.torch_device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = VitsModel.from_pretrained(model_dir, dtype=torch.float32).to(self.torch_device).eval()

    @torch.no_grad()
    def speak(self, text: str, seed: int | None = None) -> AudioClip:
        inputs = self.tokenizer(text, return_tensors="pt").to(self.torch_device)
        if inputs["input_ids"].shape[1] == 0:
            raise StepInputError(f"nothing to say: the text {text!r} has no character the voice knows")
        with seeded(seed):
            waveform = self.model(**inputs).waveform[0]
        return AudioClip(samples=waveform.float().cpu().numpy(), sampling_rate=self.model.config.sampling_rate)

    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        text = state_text(state, "result")
        return {**state, "reply": text, "result": self.speak(text, params.get("seed"))}


class MusicgenStep(Step):
    """MusicGen through `transformers`: `prompt` -> `result` (an `AudioClip`). `audio_length_in_s` sets the number
    of audio tokens (the codec's frame rate per second, as the MusicGen docs count: 256 tokens ~ 5 s at 50 Hz);
    `guidance_scale` is classifier-free guidance; sampling as the model's generation config says, seeded."""

    reads = ("prompt",)
    writes = ("result",)

    def __init__(self, model_dir: Path | str, device: str | None = None, **options: Any):
        super().__init__(model_dir, device, **options)
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        self.torch_device = pick_device(device)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = MusicgenForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
        self.model.to(self.torch_device).eval()

    def generate_options(self, params: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if params.get("audio_length_in_s") is not None:
            frame_rate = self.model.config.audio_encoder.frame_rate
            options["max_new_tokens"] = max(1, round(float(params["audio_length_in_s"]) * frame_rate))
        if params.get("guidance_scale") is not None:
            options["guidance_scale"] = float(params["guidance_scale"])
        return options

    @torch.no_grad()
    def __call__(self, state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        inputs = self.processor(text=[state_text(state, "prompt")], padding=True, return_tensors="pt")
        with seeded(params.get("seed")):
            values = self.model.generate(**inputs.to(self.torch_device), **self.generate_options(params))
        rate = self.model.config.audio_encoder.sampling_rate
        return {**state, "result": AudioClip(samples=values[0, 0].float().cpu().numpy(), sampling_rate=rate)}
