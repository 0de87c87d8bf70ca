"""`--push-to-hub REPO` (train, merge, export): upload the result with `huggingface_hub`, checked before anything
slow: a token and a reachable Hub, so an offline machine fails in one line before training, not after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from peftlab.errors import PeftlabError


def check_push(repo: str) -> Any:
    """The Hub client for `repo` once the token is known and the Hub answered (whoami)."""
    from huggingface_hub import HfApi, get_token

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise PeftlabError(f"--push-to-hub {repo}: name the repository as OWNER/NAME, e.g. --push-to-hub my-name/dialogsum-lora")
    token = get_token()
    if not token:
        raise PeftlabError("--push-to-hub needs a Hugging Face write token: set HF_TOKEN or run `hf auth login`, "
                           "or drop --push-to-hub")
    api = HfApi(token=token)
    try:
        api.whoami()
    except Exception as error:  # offline mode, no network, a bad token: all stop the upload before the work starts
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise PeftlabError(f"--push-to-hub {repo}: cannot reach the Hugging Face Hub with this token ({first}); "
                           "check the network, HF_HUB_OFFLINE and HF_TOKEN, or drop --push-to-hub") from None
    return api


def push(api: Any, repo: str, path: Path, public: bool, say: Callable[[str], None]) -> str:
    """Create the repository (private unless `public`) if needed and upload the folder or file; returns its URL."""
    try:
        url = api.create_repo(repo, private=not public, exist_ok=True, repo_type="model")
        message = f"peftlab: {path.name}"
        if path.is_dir():
            api.upload_folder(repo_id=repo, folder_path=str(path), commit_message=message, repo_type="model")
        else:
            api.upload_file(path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo, commit_message=message, repo_type="model")
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise PeftlabError(f"--push-to-hub {repo}: the upload failed ({first}); the result is safe in {path}: "
                           f"upload it again with `hf upload {repo} {path}`") from None
    say(f"pushed {path} to {url} ({'public' if public else 'private'})")
    return str(url)
