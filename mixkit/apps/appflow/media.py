"""How apps hand media between steps and how `mixkit app run` writes them.

Images are PIL images; a mask is a PIL "L" image (255 inside, 0 outside); a video is `VideoFrames`; a sound is
`AudioClip`. `write_media` writes any of them under a folder and returns the path, so the JSON output can
name the file instead of the data.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class VideoFrames:
    frames: list[Image.Image]
    fps: int = 8


@dataclass
class AudioClip:
    samples: np.ndarray  # float, mono, in [-1, 1]
    sampling_rate: int

    def __post_init__(self) -> None:
        self.samples = np.asarray(self.samples, dtype=np.float32).reshape(-1)
        if self.sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {self.sampling_rate}")


def is_media(value: object) -> bool:
    return isinstance(value, (Image.Image, VideoFrames, AudioClip))


def write_wav(clip: AudioClip, path: Path) -> Path:
    """16-bit PCM WAV, written with the standard library (no soundfile / ffmpeg needed)."""
    pcm = (np.clip(clip.samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(clip.sampling_rate)
        out.writeframes(pcm.tobytes())
    return path


def write_media(value: Image.Image | VideoFrames | AudioClip, directory: Path, stem: str) -> Path:
    """`value` written as DIR/STEM.png (image or mask), .gif (video) or .wav (audio); the path returned."""
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(value, Image.Image):
        path = directory / f"{stem}.png"
        value.save(path)
        return path
    if isinstance(value, VideoFrames):
        path = directory / f"{stem}.gif"
        first, *rest = value.frames
        first.save(path, save_all=True, append_images=rest, duration=max(1, round(1000 / value.fps)), loop=0)
        return path
    if isinstance(value, AudioClip):
        return write_wav(value, directory / f"{stem}.wav")
    raise TypeError(f"not a media value: {type(value).__name__}")
