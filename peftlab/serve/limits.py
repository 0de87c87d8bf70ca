"""What one client may ask of `peftlab serve`: every size, count and timeout, with its default and its flag."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    # requests
    max_body_bytes: int = 1 << 20  # larger bodies get 413 before a byte of them is read
    max_header_bytes: int = 16 * 1024  # h11's own default, stated: larger request heads get 400
    max_tokens: int = 512  # the most tokens one completion may ask for
    max_prompts: int = 64  # prompts in one /v1/completions request
    max_messages: int = 256  # messages in one chat request
    max_stop_strings: int = 4  # OpenAI's limit
    max_stop_chars: int = 1000  # matching is linear in the answer however long they are (text.py); this bounds the work per request
    # the server
    max_waiting: int = 256  # jobs queued for the scheduler; more get 429
    max_connections: int = 512  # open connections, idle ones included; requests beyond get 503
    # a connection that sends no complete request head this long is closed; longer than the 5 s for which httpx (the openai
    # client's transport) keeps an idle connection, so the client drops it first and never sends on one the server is closing
    idle_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0  # the whole request body must arrive within this
    wait_seconds: float = 600.0  # longest silence from the scheduler before a request gives up (504)

