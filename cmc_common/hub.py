"""Fail in seconds without a network. Loading a Hugging Face hub id when the hub cannot be reached
makes huggingface_hub wait for its 10 s metadata timeout, several times over, before the loader's
error (55–145 s measured). One quick probe before the first hub id settles it: when the hub does
not answer, the hub libraries are switched to offline mode, so a model that is in the local cache
still loads and one that is not fails at once with the loader's one-line error."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

PROBE_SECONDS = 3.0
"""How long the probe waits for the hub's first answer; an answering hub takes well under 1 s."""
DEFAULT_ENDPOINT = "https://huggingface.co"

_probed: bool | None = None
"""The probe's verdict in this process (None: not probed yet): probed once, not per model."""


def is_hub_id(name: str) -> bool:
    """``owner/model`` that is not a local path: only those make the loaders go to the hub."""
    if not name or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return False
    return name.count("/") == 1 and " " not in name


def offline_unless_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Switch the hub libraries to offline mode when the hub does not answer within ``timeout``
    seconds; True when they are offline (already set by the user, or now)."""
    global _probed
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        _set_offline()
        return True
    if _probed is None:
        _probed = _reachable(_endpoint(), timeout)
        if not _probed:
            print(
                f"note: {_endpoint()} does not answer: using only models already on this machine "
                "(HF_HUB_OFFLINE=1)",
                file=sys.stderr,
            )
            os.environ["HF_HUB_OFFLINE"] = "1"
            _set_offline()
    return not _probed


def _endpoint() -> str:
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # read once at its import; what the loaders will use
        return constants.ENDPOINT
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def _reachable(endpoint: str, timeout: float) -> bool:
    """Any HTTP answer (even an error status) means the hub is there; no answer means it is not."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, timeouts, refused connections, a malformed URL
        return False
    return True


def _set_offline() -> None:
    """Offline mode for libraries imported already (they read the variable at import)."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
