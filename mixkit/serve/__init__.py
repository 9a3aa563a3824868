"""`mixkit serve`: an HTTP server for any pipeline (FastAPI + uvicorn, the `serve` extra).

Layout: `config` (the typed options, light), `inputs` (decoding and checking requests), `batching` (the worker
thread that owns the model and batches requests), `model` (requests -> pipeline calls), `openai_chat` (the
chat-completions format), `metrics` and `middleware` (Prometheus text, body cap), `page` (the web page), `app`
(the routes), `server` (the command). Importing this package imports none of them.
"""
