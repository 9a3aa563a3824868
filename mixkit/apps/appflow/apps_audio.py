"""The audio apps: speech to an LLM answer (`audio2caption`), text to music (`music_generation`) and spoken chat
(`audio_chat`: speech recognition -> LLM -> speech), on `transformers` and `diffusers` (steps in
`steps/audio.py`, `steps/llm.py`, `steps/diffusion.py`). Light: data only.

Following PaddleMIX's AppFlow (PaddlePaddle/PaddleMIX paddlemix/appflow/: `audio_asr.py` at 095048d,
`text2text_generation.py` at 240e218, `text2audio_generation.py` at 734770d, `text2speech_synthesize.py` at
6f3db6b), with each model's `transformers` / `diffusers` counterpart:
its ASR is Whisper (PaddleSpeech's WhisperExecutor) -> openai/whisper-small here; its LLM ChatGLM-6B -> GLM-4 chat
(see `apps_generation.llm_models`); its music model cvssp/audioldm (kept, with AudioLDM's PaddleMIX defaults:
10 steps, 5.0 s) or MusicGen; its TTS PaddleSpeech FastSpeech2 (Chinese) -> VITS MMS-TTS (English; pass another
MMS-TTS folder for another language). PaddleMIX's music app also lists MiniGPT-4 and ChatGLM stages that turn an
image into a music description; here the app starts from the text prompt.
"""

from __future__ import annotations

from mixkit.apps.appflow.apps_generation import llm_models
from mixkit.apps.appflow.spec import AppModel, AppSpec, Stage

_AUDIO = "mixkit.apps.appflow.steps.audio:"


def _hub(repo: str, step: str, kinds: tuple[str, ...], description: str) -> AppModel:
    return AppModel(name=repo, step=step, hf_repo=repo, kinds=kinds, description=description)


ASR = Stage("asr", (
    _hub("openai/whisper-small", _AUDIO + "WhisperAsrStep", ("whisper",), "Whisper small (multilingual)"),
    _hub("openai/whisper-large-v3", _AUDIO + "WhisperAsrStep", ("whisper",), "Whisper large v3"),
    _hub("openai/whisper-base", _AUDIO + "WhisperAsrStep", ("whisper",), "Whisper base"),
), default="openai/whisper-small")
ASR_PARAMS = {"language": None, "task": None}  # None: the checkpoint's own (detected language, transcribe)
CHAT_LLM = Stage("llm", llm_models("TextGenerationStep"), default="THUDM/glm-4-9b-chat-hf")
TTS = Stage("tts", (
    _hub("facebook/mms-tts-eng", _AUDIO + "TextToSpeechStep", ("vits",), "MMS-TTS English (VITS)"),
    _hub("kakao-enterprise/vits-ljs", _AUDIO + "TextToSpeechStep", ("vits",), "VITS LJSpeech (needs phonemizer)"),
), default="facebook/mms-tts-eng")

AUDIO2CAPTION = AppSpec(
    name="audio2caption",
    description="Whisper transcribes the audio; the LLM answers the `prompt` template filled with the transcript",
    stages=(ASR, CHAT_LLM),
    inputs=("audio", "prompt"), outputs=("asr_text", "result"),
    params={**ASR_PARAMS, "max_new_tokens": 256},
    example='mixkit app run audio2caption --audio meeting.wav --prompt "Summarise this recording: {}" '
            "--output out/ --json",
)

MUSIC = AppSpec(
    name="music_generation",
    description="AudioLDM (or AudioLDM 2, MusicLDM, MusicGen): music or sound for a text prompt, written as WAV",
    stages=(Stage("generator", (
        _hub("cvssp/audioldm", "mixkit.apps.appflow.steps.diffusion:TextToAudioStep", ("AudioLDMPipeline",),
             "AudioLDM (diffusers)"),
        _hub("cvssp/audioldm2-music", "mixkit.apps.appflow.steps.diffusion:TextToAudioStep", ("AudioLDM2Pipeline",),
             "AudioLDM 2 music (diffusers)"),
        _hub("ucsd-reach/musicldm", "mixkit.apps.appflow.steps.diffusion:TextToAudioStep", ("MusicLDMPipeline",),
             "MusicLDM (diffusers)"),
        _hub("facebook/musicgen-small", _AUDIO + "MusicgenStep", ("musicgen",),
             "MusicGen small (transformers; num_inference_steps and negative_prompt do not apply)"),
    ), default="cvssp/audioldm"),),
    inputs=("prompt",), outputs=("result",),
    # PaddleMIX's AudioLDM task: 10 steps, 5.0 s; guidance 2.5 is AudioLDMPipeline's default.
    params={"negative_prompt": None, "guidance_scale": 2.5, "num_inference_steps": 10, "audio_length_in_s": 5.0,
            "seed": None},
    example='mixkit app run music_generation --prompt "a calm piano melody with soft rain" --seed 0 --output out/',
)

AUDIO_CHAT = AppSpec(
    name="audio_chat",
    description="Spoken chat: Whisper transcribes the question, the LLM answers, VITS speaks the answer",
    stages=(ASR, CHAT_LLM, TTS),
    inputs=("audio", "prompt"), outputs=("asr_text", "reply", "result"),
    params={**ASR_PARAMS, "max_new_tokens": 256, "seed": None},
    example="mixkit app run audio_chat --audio question.wav --seed 0 --output out/ --json",
)

APPS: tuple[AppSpec, ...] = (AUDIO2CAPTION, MUSIC, AUDIO_CHAT)
