"""``EmbeddingJob``: an embeddings request answered with one JSON body.

Only ``status``, ``hang`` and ``ttft`` apply; the vectors are
``generate.embedding_vector`` of each input, so a test can recompute them.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from harness.fake_llama._http import json_response
from harness.fake_llama._server_view import ServerView
from harness.fake_llama.faults import Faults
from harness.fake_llama.generate import embedding_base64, embedding_vector, tokenize
from harness.fake_llama.jobs import BaseJob

__all__ = ["EmbeddingJob"]


class EmbeddingJob(BaseJob):
    """An embeddings request: ``status``/``hang``/``ttft`` faults apply, then one JSON body."""

    def __init__(
        self,
        server: ServerView,
        request: Request,
        texts: list[str],
        *,
        oai: bool,
        use_base64: bool,
        faults: Faults,
    ) -> None:
        super().__init__(server, request, faults)
        self.texts = texts
        self.oai = oai  # the OpenAI list shape, else llama.cpp's native one
        self.use_base64 = use_base64

    async def run(self) -> None:
        await self.before_headers()
        await self.sleep(self.faults.ttft)
        n_tokens = sum(len(tokenize(t)) for t in self.texts)
        self.server.stats.prompt_tokens += n_tokens
        payload = json_response(self.request, 200, self._body(n_tokens))
        self.request.write(payload)
        self.request.finish()
        self.server.stats.completed += 1

    def _body(self, n_tokens: int) -> Any:
        seed = self.server.config.seed
        vectors = [embedding_vector(t, seed) for t in self.texts]
        if not self.oai:
            return [{"index": i, "embedding": [v]} for i, v in enumerate(vectors)]
        data = [
            {
                "embedding": embedding_base64(v) if self.use_base64 else v,
                "index": i,
                "object": "embedding",
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "model": self.server.config.model_alias,
            "object": "list",
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            "data": data,
        }
