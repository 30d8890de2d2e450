"""Whether the Hugging Face hub can be reached, decided in seconds (one TCP connect, DNS included).

huggingface_hub itself finds out by a metadata request with retries, and before it does, a command has imported
torch and transformers (4-7 s of CPU on the 2-core host, 10-40 s when it is busy): an offline machine waited
that long to hear that a model is not in its cache. The model spec check (`advisor.models.check_model_spec`)
and GSM8K's loader ask here first; standard library only (huggingface_hub's constants, read lazily).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

PROBE_S = 2.0
"""How long the probe waits for the hub's TCP handshake: a connected host answers in milliseconds."""

_OFF = {"1", "true", "yes", "on"}


def endpoint() -> str:
    """The hub's address as huggingface_hub reads it (`HF_ENDPOINT`, default https://huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def offline_set(*also: str) -> bool:
    """Whether the user asked for offline mode: `HF_HUB_OFFLINE` (as huggingface_hub read it at import, or set
    since), `TRANSFORMERS_OFFLINE` or any of the variables `also` names (`HF_DATASETS_OFFLINE` for datasets)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(os.environ.get(name, "0").strip().lower() in _OFF
                                                 for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *also))


def hub_reachable(timeout: float = PROBE_S, *also_offline: str) -> bool:
    """Whether the hub answers a TCP connect within `timeout` seconds; False at once in offline mode
    (`offline_set`). The connect runs in a daemon thread, so a resolver that hangs cannot hold the caller longer."""
    if offline_set(*also_offline):
        return False
    url = urlparse(endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def unreachable_note(timeout: float = PROBE_S) -> str:
    """Why the hub counts as unreachable, said in the refusal: offline mode, or no answer from the endpoint."""
    if offline_set():
        return "offline mode is set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)"
    return f"the hub ({endpoint()}) could not be reached in {timeout:g} s"
