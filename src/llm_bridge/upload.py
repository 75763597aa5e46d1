"""Upload stage: push a merged model folder to the Hugging Face Hub and write a receipt.

The token comes only from HF_TOKEN or huggingface_hub's login cache, and is never printed or stored.
Uploads are idempotent: if the branch already holds exactly these files, no commit is made and the Hub's
current commit is reused. Otherwise the whole folder lands as ONE commit (create_commit, not upload_folder:
with hf_xet installed upload_folder may split a folder into several commits).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from llm_bridge.atomic import write_json

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
SKIP_SUFFIXES = (".partial", ".tmp", ".lock")


class UploadError(Exception):
    """A failure with a message that names the cause and the fix (and never the token)."""


def _version() -> str:
    try:
        return importlib.metadata.version("llm-bridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def local_files(model_dir: Path) -> list[dict[str, Any]]:
    """Every file to upload with size, sha256 and git blob sha1 (what the Hub reports for non-LFS files)."""
    files = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir)
        # Hidden entries (.cache/, .git/) and files still being written are not part of the model.
        if any(part.startswith(".") for part in rel.parts) or rel.name.endswith(SKIP_SUFFIXES):
            continue
        size = path.stat().st_size
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha256.update(chunk)
                sha1.update(chunk)
        files.append({"path": rel.as_posix(), "size": size, "sha256": sha256.hexdigest(),
                      "git_sha1": sha1.hexdigest(), "local": path})
    return files


def _remote_matches(local: dict[str, Any], sibling: Any) -> bool:
    if sibling.lfs is not None:  # LFS/xet file: the Hub keeps the content's sha256
        return sibling.lfs.sha256 == local["sha256"]
    return sibling.blob_id == local["git_sha1"]  # regular git blob


def _sync(api: HfApi, repo_id: str, revision: str, public: bool, files: list[dict], message: str) -> dict:
    """One idempotent attempt: safe to repeat after any failure, even one that hid a successful commit."""
    api.create_repo(repo_id, private=not public, exist_ok=True)
    if revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    # One request gives both the head commit and its files, so the comparison and the sha are consistent.
    info = api.model_info(repo_id, revision=revision, files_metadata=True)
    remote = {s.rfilename: s for s in info.siblings or []}
    changed = [f for f in files if f["path"] not in remote or not _remote_matches(f, remote[f["path"]])]
    wanted = {f["path"] for f in files}
    # Dotfiles on the Hub (.gitattributes) are managed there, as they are skipped locally.
    stale = [p for p in remote if p not in wanted and not any(s.startswith(".") for s in p.split("/"))]
    result = {"private": info.private}
    if not changed and not stale:
        return {**result, "commit": info.sha, "url": f"{api.endpoint}/{repo_id}/commit/{info.sha}",
                "uploaded": False}
    ops = [CommitOperationAdd(f["path"], str(f["local"])) for f in changed]
    ops += [CommitOperationDelete(p) for p in stale]
    # parent_commit: refuse to overwrite a commit someone pushed after we looked.
    commit = api.create_commit(repo_id, ops, commit_message=message, revision=revision, parent_commit=info.sha)
    return {**result, "commit": commit.oid, "url": commit.commit_url, "uploaded": True}


def _is_transient(err: Exception) -> bool:
    if isinstance(err, HfHubHTTPError):
        return err.response is not None and err.response.status_code in TRANSIENT_STATUS
    return isinstance(err, httpx.TransportError)


def _explain(err: Exception, repo_id: str, revision: str) -> str:
    """Name the cause and the fix; the token never appears (it is not in URLs or server messages)."""
    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the Hub cannot be reached: unset HF_HUB_OFFLINE to upload."
    if isinstance(err, httpx.TransportError):
        return f"cannot reach the Hub ({type(err).__name__}): check the network, proxy and HF_ENDPOINT."
    status = err.response.status_code if isinstance(err, HfHubHTTPError) and err.response is not None else None
    detail = getattr(err, "server_message", None) or str(err).strip().splitlines()[0]
    if isinstance(err, RevisionNotFoundError):
        return f"revision '{revision}' not found in {repo_id}: check --revision."
    if isinstance(err, RepositoryNotFoundError):
        return (f"repository {repo_id} not found or not visible to this token (HTTP {status}): check --repo-id "
                "and that the token's account may write to that namespace.")
    if status == 401:
        return ("the Hub rejected the token (401 Unauthorized): it is invalid, expired or revoked. Create a token "
                "with write access at https://huggingface.co/settings/tokens, then set HF_TOKEN or run "
                "`hf auth login`.")
    if status == 403:
        return (f"the token may not write to {repo_id} (403 Forbidden): use a token with write permission on "
                f"that namespace. Hub said: {detail}")
    if status == 412:
        return f"{repo_id}@{revision} changed while uploading (412): re-run the upload."
    if status in TRANSIENT_STATUS:
        return f"the Hub is unavailable (HTTP {status}): check https://status.huggingface.co and re-run."
    return f"the Hub refused the upload (HTTP {status}): {detail}" if status else detail


def upload(model_dir: str | os.PathLike, repo_id: str, revision: str = "main", *, public: bool = False,
           eval_json: str | os.PathLike, manifest: str | os.PathLike, receipt: str | os.PathLike,
           run_name: str | None = None, endpoint: str | None = None, tries: int = 3, backoff_s: float = 1.0,
           sleep: Callable[[float], None] = time.sleep) -> dict:
    """Upload the folder, then write and return the receipt. Raises UploadError on any failure."""
    # Everything that can be checked locally is checked before the first network call.
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UploadError(f"invalid repo id '{repo_id}': {e}") from None
    if repo_id.count("/") != 1:
        raise UploadError(f"invalid repo id '{repo_id}': expected ORG/NAME (a namespace and a name).")
    if not revision or revision.startswith("refs/"):
        raise UploadError(f"invalid revision '{revision}': give a branch name such as main.")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UploadError(f"model folder {model_dir} does not exist: run the merge stage first.")
    files = local_files(model_dir)
    if not files:
        raise UploadError(f"model folder {model_dir} holds no files to upload.")
    inputs = {}
    for name, path in (("eval", eval_json), ("manifest", manifest)):
        try:
            inputs[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise UploadError(f"cannot read {name} JSON {path}: {e}") from None

    token = get_token()  # HF_TOKEN, else the cache written by `hf auth login`
    if not token:
        raise UploadError("no Hugging Face token found: set the HF_TOKEN environment variable or run "
                          "`hf auth login` (the token needs write access).")

    run = run_name or next((str(inputs["manifest"][k]) for k in ("run_id", "run_name", "run")
                            if isinstance(inputs["manifest"], dict) and inputs["manifest"].get(k)), model_dir.name)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None  # read now, not at import
    api = HfApi(endpoint=endpoint, token=token, library_name="llm-bridge", library_version=_version())
    for attempt in range(1, tries + 1):
        try:
            result = _sync(api, repo_id, revision, public, files, f"llm-bridge: upload run {run}")
            break
        except (HfHubHTTPError, httpx.TransportError, OfflineModeIsEnabled, ValueError) as e:
            if attempt < tries and _is_transient(e):
                sleep(backoff_s * 2 ** (attempt - 1))
                continue
            msg = _explain(e, repo_id, revision)
            if _is_transient(e):
                msg += f" (gave up after {attempt} attempts)"
            raise UploadError(f"upload to {repo_id}@{revision} failed: {msg}".replace(token, "***")) from None

    data = {
        "repo_id": repo_id, "revision": revision, "commit": result["commit"], "commit_url": result["url"],
        "private": result["private"], "uploaded": result["uploaded"], "run": run,
        "files": [{k: f[k] for k in ("path", "size", "sha256")} for f in files],
        "eval": inputs["eval"], "manifest": inputs["manifest"],
        "uploaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "llm_bridge_version": _version(),
    }
    write_json(receipt, data)  # only now: the Hub has confirmed the commit
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llm_bridge.upload", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, help="merged Hugging Face model folder")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--revision", default="main", help="branch to commit to (created if missing)")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--eval-json", required=True, help="evaluation results to copy into the receipt")
    p.add_argument("--manifest", required=True, help="provenance manifest to copy into the receipt")
    p.add_argument("--receipt", required=True, help="where to write the receipt JSON")
    p.add_argument("--run-name", help="named in the commit message (default: from the manifest)")
    a = p.parse_args(argv)
    try:
        r = upload(a.model_dir, a.repo_id, a.revision, public=a.public, eval_json=a.eval_json,
                   manifest=a.manifest, receipt=a.receipt, run_name=a.run_name)
    except UploadError as e:
        print(f"llm-bridge: error: {e}", file=sys.stderr)  # same prefix as errors.run_main
        return 1
    state = "committed" if r["uploaded"] else "unchanged, reused"
    print(f"{r['repo_id']}@{r['revision']}: {state} {r['commit']} ({len(r['files'])} files) -> {a.receipt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
