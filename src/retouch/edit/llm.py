"""The region from any OpenAI-compatible chat endpoint (POST {url}/v1/chat/completions).

Optional (``--classifier llm --llm-url URL``): the model answers JSON
``{"region": "foreground" | "background" | "global", "confidence": 0..1}``, which then stands in
for the caption rules of ``region.caption_region``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from retouch.edit.region import REGIONS, RegionGuess, check_captions_differ
from retouch.errors import RetouchError

DEFAULT_TIMEOUT_S = 10.0
SYSTEM_PROMPT = (
    "You classify image edits. Given a caption of a picture (source) and a caption of the wanted "
    "picture (target), say which region of the picture must change: 'foreground' (the subject or "
    "object), 'background' (the scene behind it), or 'global' (the style of the whole picture). "
    'Answer with JSON only: {"region": "...", "confidence": 0.0-1.0}.'
)


def chat_completions_url(url: str) -> str:
    """Accept a server root, a ``/v1`` base, or the full endpoint."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


def llm_region(
    source: str, target: str, url: str, model: str = "default", timeout: float = DEFAULT_TIMEOUT_S
) -> RegionGuess:
    """Ask the endpoint at ``url`` for the edit's region.

    Raises:
        RetouchError: identical captions, an unreachable endpoint, or an answer that is not the JSON
            asked for.
    """
    check_captions_differ(source, target)
    endpoint = chat_completions_url(url)
    body = {
        "model": model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"source: {source}\ntarget: {target}"},
        ],
    }
    request = urllib.request.Request(
        endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.load(response)
    except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
        raise RetouchError(
            f"the region classifier at {endpoint} did not answer ({e}); check --llm-url, or use "
            "--classifier rules, or pass --region"
        ) from e
    return _parse_reply(reply, endpoint)


def _parse_reply(reply: Any, endpoint: str) -> RegionGuess:
    try:
        content = reply["choices"][0]["message"]["content"]
        fenced = re.search(r"\{.*\}", content, re.DOTALL)  # tolerate ```json fences and chatter
        answer = json.loads(fenced.group(0) if fenced else content)
        region = str(answer["region"]).strip().lower()
        confidence = float(answer.get("confidence", 0.8))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise RetouchError(
            f"the region classifier at {endpoint} gave no usable answer ({type(e).__name__}: {e}); "
            'it must reply {"region": ..., "confidence": ...}. Pass --region instead'
        ) from e
    if region not in REGIONS:
        raise RetouchError(
            f"the region classifier at {endpoint} answered region {region!r}; pass --region ({', '.join(REGIONS)})"
        )
    return RegionGuess(region, min(max(confidence, 0.0), 1.0), False, {"rule": "llm", "url": endpoint})
