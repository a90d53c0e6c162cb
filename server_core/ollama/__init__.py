"""Ollama's API over llama-server's OpenAI-compatible routes (see docs/ollama.md).

``request_bodies`` and ``options`` translate requests, ``reply_bodies`` answers, ``relay``
turns an SSE stream into Ollama's NDJSON stream with its honest endings, ``gguf`` reads
model headers for ``catalog``, ``keep_alive`` parses durations, and ``api.OllamaApi``
puts them together over ``IRouterState``; ``web.ollama_routes`` serves it.
"""
