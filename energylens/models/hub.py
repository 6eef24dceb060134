"""Any Hugging Face model id, online: ``config.json`` and ``hf_quant_config.json`` through ``huggingface_hub``.

Only those two small files are fetched (never weights), into the normal Hugging Face cache (``HF_HUB_CACHE``
or ``HF_HOME``), so a second use needs no network. ``HF_TOKEN`` opens gated repositories;
``HF_HUB_OFFLINE=1`` reads the cache only. ``huggingface_hub`` is imported when first needed.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from energylens.errors import SpecError

CONFIG = "config.json"
QUANT_CONFIG = "hf_quant_config.json"
PROBE_TIMEOUT_S = 3.0  # a quick TCP connect to the endpoint before the library's own retries


@dataclass(frozen=True)
class HubConfig:
    config: dict
    quant_config: dict | None
    origin: str  # cached file path


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def looks_like_repo_id(name: str) -> bool:
    parts = name.strip().split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") and " " not in p for p in parts) \
        and not name.endswith(".json")


def _endpoint_reachable() -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _read(path: str, repo_id: str, filename: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"model {repo_id}: {filename}", path, f"readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SpecError(f"model {repo_id}: {filename}", type(data).__name__, "a JSON object")
    return data


def fetch(repo_id: str) -> tuple[HubConfig | None, str]:
    """(configs, "") from the cache or the Hub, or (None, why not). A gated repository without access is an
    error (it exists; only a token opens it)."""
    try:
        import huggingface_hub as hf
        from huggingface_hub import errors as hf_errors
    except ImportError:
        return None, "huggingface_hub is not installed"
    try:  # the Hub's own rule for repository ids (it raises on anything else, even for a cache lookup)
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except hf_errors.HFValidationError:
        return None, "not a Hugging Face repository id (org/name of letters, digits, '-', '_', '.'; at most 96)"
    cache = cache_dir()
    cached = hf.try_to_load_from_cache(repo_id, CONFIG, cache_dir=cache)
    if isinstance(cached, str):
        quant = hf.try_to_load_from_cache(repo_id, QUANT_CONFIG, cache_dir=cache)
        if isinstance(quant, str) or quant is not None or offline():  # cached, cached as missing, or offline
            qc = _read(quant, repo_id, QUANT_CONFIG) if isinstance(quant, str) else None
            return HubConfig(_read(cached, repo_id, CONFIG), qc, cached), ""
    if offline():
        return None, "not in the Hugging Face cache and HF_HUB_OFFLINE=1"
    if not _endpoint_reachable():
        return None, "the Hugging Face Hub is not reachable (offline)"
    token = os.environ.get("HF_TOKEN") or None
    try:
        path = cached if isinstance(cached, str) else hf.hf_hub_download(repo_id, CONFIG, cache_dir=cache, token=token)
    except hf_errors.GatedRepoError as exc:
        raise SpecError("model", repo_id, "a repository you can read: it is gated on Hugging Face; accept its "
                                          "licence and set HF_TOKEN") from exc
    except hf_errors.RepositoryNotFoundError:
        return None, "no such repository on the Hugging Face Hub (or it is private: set HF_TOKEN)"
    except hf_errors.LocalEntryNotFoundError:
        return None, "the Hugging Face Hub did not answer"
    except hf_errors.EntryNotFoundError:
        return None, "the repository has no config.json"
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        return None, f"the Hugging Face Hub did not answer ({type(exc).__name__})"
    quant_path = None
    try:
        quant_path = hf.hf_hub_download(repo_id, QUANT_CONFIG, cache_dir=cache, token=token)
    except (hf_errors.EntryNotFoundError, hf_errors.HfHubHTTPError, OSError):
        quant_path = None
    qc = _read(quant_path, repo_id, QUANT_CONFIG) if quant_path else None
    return HubConfig(_read(path, repo_id, CONFIG), qc, path), ""
