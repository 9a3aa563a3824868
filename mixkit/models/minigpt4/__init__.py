"""MiniGPT-4 (Vicuna v0 with BLIP-2's Q-Former, or Llama-2 on grouped ViT patches) and MiniGPT-v2 (Llama-2-chat
with LoRA, 448 px, task identifiers and box text). Modules: `config`, `modeling`, `templates` (conversation
templates, stop words, reference settings), `boxes` (box text), `convert` (official files), `checkpoints`
(catalogue entries), `tiny` (debug configs)."""
