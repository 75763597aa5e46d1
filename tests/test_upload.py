"""The upload stage against a local Hub (tests/hub_server.py) with the real huggingface_hub client."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from datetime import datetime
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants

sys.path.insert(0, str(Path(__file__).parent))  # hub_server sits next to this file
from hub_server import HubServer, git_blob_sha1  # noqa: E402

from llm_bridge.upload import UploadError, _remote_matches, local_files, upload  # noqa: E402

TOKEN = "hf_LlmBridgeTestToken0123456789abcdef"
REPO = "org/tiny-model"

MODEL = {
    "config.json": b'{"model_type": "llama"}\n',
    "model.safetensors": bytes(range(256)) * 800,
    "tokenizer.json": b'{"version": "1.0"}\n',
    "README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n",
    "extra/notes.txt": b"nested files keep their folder\n",
}
TEMP = {  # present in the folder, never uploaded
    ".cache/huggingface/download/x.metadata": b"cache",
    ".hidden": b"dot",
    "model.safetensors.partial": b"half",
    "shard.tmp": b"tmp",
    "config.json.lock": b"",
}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubServer(token=TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        for var in ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        # No login cache of the developer's machine may leak in; offline settings of other tests neither.
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-such-token"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        # Telemetry would fetch /api/agent-harnesses once per process: keep request counts order-independent.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield server


@pytest.fixture
def run(tmp_path):
    """Model folder, eval and manifest files, and where the receipt goes."""
    model = tmp_path / "model"
    for rel, data in {**MODEL, **TEMP}.items():
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(data)
    (tmp_path / "eval.json").write_text(json.dumps({"gsm8k": {"accuracy": 0.42}}))
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "run-7", "git": "abc123"}))
    return {"model_dir": model, "eval_json": tmp_path / "eval.json", "manifest": tmp_path / "manifest.json",
            "receipt": tmp_path / "out" / "receipt.json"}


def do_upload(run, receipt=None, **kw):
    kw.setdefault("backoff_s", 0.01)
    return upload(run["model_dir"], REPO, eval_json=run["eval_json"], manifest=run["manifest"],
                  receipt=receipt or run["receipt"], **kw)


def cli_command(run, env_update, *extra, repo=REPO) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(run["model_dir"].parent / "hf_home"), **env_update)  # empty login cache
    cmd = [sys.executable, "-m", "llm_bridge.upload", "--model-dir", str(run["model_dir"]), "--repo-id", repo,
           "--eval-json", str(run["eval_json"]), "--manifest", str(run["manifest"]),
           "--receipt", str(run["receipt"]), *extra]
    return cmd, env


def cli(run, env_update, *extra, repo=REPO):
    cmd, env = cli_command(run, env_update, *extra, repo=repo)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_first_upload_is_one_private_commit_with_exactly_the_model_files(hub, run):
    receipt = do_upload(run)
    repo = hub.repos[REPO]
    assert repo.private  # private unless --public
    [commit] = hub.commits(REPO)
    assert commit.added == MODEL  # exactly the model files, byte for byte: no temp/hidden files
    assert commit.files == {".gitattributes": repo.log[0].files[".gitattributes"], **MODEL}
    assert "run-7" in commit.message  # the run comes from the manifest
    assert receipt == json.loads(run["receipt"].read_text())
    assert receipt["commit"] == repo.branches["main"] == commit.oid
    assert receipt["commit_url"].endswith(f"/{REPO}/commit/{commit.oid}")
    assert receipt["uploaded"] is True and receipt["private"] is True
    assert receipt["repo_id"] == REPO and receipt["revision"] == "main"
    assert {f["path"]: f["size"] for f in receipt["files"]} == {p: len(d) for p, d in MODEL.items()}
    assert all(len(f["sha256"]) == 64 for f in receipt["files"])
    assert receipt["eval"] == {"gsm8k": {"accuracy": 0.42}}
    assert receipt["manifest"] == {"run_id": "run-7", "git": "abc123"}
    assert datetime.fromisoformat(receipt["uploaded_at"]).utcoffset().total_seconds() == 0
    assert receipt["llm_bridge_version"]


def test_unchanged_folder_makes_no_new_commit(hub, run):
    first = do_upload(run)
    n_requests = len(hub.requests)
    second = do_upload(run)
    assert len(hub.commits(REPO)) == 1
    assert second["commit"] == first["commit"] and second["uploaded"] is False
    assert not any(path.endswith(("/commit/main", "/preupload/main")) for _, path, _ in hub.requests[n_requests:])


def test_changed_file_makes_exactly_one_new_commit(hub, run):
    first = do_upload(run)
    (run["model_dir"] / "config.json").write_bytes(b'{"model_type": "llama", "v": 2}\n')
    (run["model_dir"] / "extra" / "notes.txt").unlink()  # gone locally -> deleted on the Hub
    second = do_upload(run)
    commits = hub.commits(REPO)
    assert len(commits) == 2 and commits[1].oid == second["commit"] != first["commit"]
    assert commits[1].added == {"config.json": b'{"model_type": "llama", "v": 2}\n'}
    assert commits[1].deleted == ["extra/notes.txt"]
    assert set(commits[1].files) == {".gitattributes", *MODEL} - {"extra/notes.txt"}


def test_cli_public_branch(hub, run):
    r = cli(run, {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url}, "--public", "--revision", "runs/exp-1")
    assert r.returncode == 0, r.stderr
    repo = hub.repos[REPO]
    assert not repo.private
    [commit] = hub.commits(REPO)
    assert commit.branch == "runs/exp-1" and repo.branches["runs/exp-1"] == commit.oid
    assert repo.head("main").files == {".gitattributes": repo.log[0].files[".gitattributes"]}  # main untouched
    assert json.loads(run["receipt"].read_text())["revision"] == "runs/exp-1"
    assert TOKEN not in r.stdout + r.stderr


@pytest.mark.parametrize("step", ["preupload", "commit"])
def test_killed_mid_upload_leaves_no_receipt_and_the_rerun_commits_once(hub, run, step):
    """SIGKILL while the Hub is answering the pre-upload (nothing committed yet) or the commit (committed, but the
    client never heard): no receipt, nothing half-written; the rerun ends with exactly one commit and a receipt
    that names it."""
    hub.delay_next_response(f"/{step}/", 60)
    cmd, env = cli_command(run, {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url})
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(f"/{step}/" in path for _, path, _ in hub.requests):
        assert proc.poll() is None and time.monotonic() < deadline, f"the client never reached the {step} request"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert len(hub.commits(REPO)) == (1 if step == "commit" else 0)
    out = run["receipt"].parent
    assert not out.exists() or all(p.name.endswith(".partial") for p in out.iterdir())
    rerun = cli(run, {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url})
    assert rerun.returncode == 0, rerun.stderr
    [commit] = hub.commits(REPO)
    receipt = json.loads(run["receipt"].read_text())
    assert receipt["commit"] == commit.oid and receipt["uploaded"] is (step == "preupload")
    assert commit.added == MODEL


def test_cli_wrong_token_fails_cleanly_without_leaking_it(hub, run):
    wrong = "hf_WrongTokenDoNotPrint9876543210zyx"
    r = cli(run, {"HF_TOKEN": wrong, "HF_ENDPOINT": hub.url})
    assert r.returncode != 0
    assert "401" in r.stderr and "HF_TOKEN" in r.stderr and "hf auth login" in r.stderr
    assert "Traceback" not in r.stderr
    assert not run["receipt"].exists()
    assert hub.commits(REPO) == [] and REPO not in hub.repos
    for secret in (wrong, TOKEN):
        assert secret not in r.stdout + r.stderr
        for f in run["model_dir"].parent.rglob("*"):
            assert not f.is_file() or secret.encode() not in f.read_bytes(), f


def test_cli_missing_token_makes_no_network_call(hub, run):
    r = cli(run, {"HF_ENDPOINT": hub.url})
    assert r.returncode != 0
    assert "HF_TOKEN" in r.stderr and "hf auth login" in r.stderr
    assert hub.requests == [] and not run["receipt"].exists()


@pytest.mark.parametrize("repo_id", ["no-namespace", "org/bad..name", "a/b/c", "org/with space"])
def test_cli_invalid_repo_id(hub, run, repo_id):
    r = cli(run, {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url}, repo=repo_id)
    assert r.returncode != 0 and "invalid repo id" in r.stderr
    assert hub.requests == [] and not run["receipt"].exists()


def test_transient_503s_are_retried_with_backoff(hub, run):
    sleeps = []
    hub.fail_next(2)  # create_repo answers 503 twice
    receipt = do_upload(run, sleep=sleeps.append, backoff_s=0.5)
    assert sleeps == [0.5, 1.0]  # exponential backoff
    assert [s for _, _, s in hub.requests].count(503) == 2
    assert len(hub.commits(REPO)) == 1 and receipt["uploaded"] is True


def test_lost_commit_response_is_not_committed_twice(hub, run):
    hub.lose_next_commit_response()  # commit lands, but the client sees a 503
    receipt = do_upload(run)
    [commit] = hub.commits(REPO)
    assert receipt["commit"] == commit.oid  # the retry found the files there and reused that commit


def test_persistent_failure_gives_clear_error_and_no_receipt(hub, run):
    hub.fail_next(1000)
    with pytest.raises(UploadError, match=r"503.*gave up after 3 attempts") as exc:
        do_upload(run)
    assert TOKEN not in str(exc.value)
    assert len(hub.requests) == 3
    assert not run["receipt"].parent.exists() or list(run["receipt"].parent.iterdir()) == []


def test_unreachable_hub_gives_clear_error(hub, run):
    with pytest.raises(UploadError, match="cannot reach the Hub"):
        do_upload(run, endpoint="http://127.0.0.1:9")  # nothing listens on the discard port
    assert not run["receipt"].exists()


def test_server_speaks_tree_and_paths_info(hub, run):
    """The stand-in answers the listing endpoints the way huggingface_hub parses them."""
    do_upload(run)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(REPO)}
    assert top == {".gitattributes": "RepoFile", "config.json": "RepoFile", "model.safetensors": "RepoFile",
                   "tokenizer.json": "RepoFile", "README.md": "RepoFile", "extra": "RepoFolder"}
    deep = {e.path: e.blob_id for e in api.list_repo_tree(REPO, recursive=True) if type(e).__name__ == "RepoFile"}
    assert deep["extra/notes.txt"] == git_blob_sha1(MODEL["extra/notes.txt"])
    [info] = api.get_paths_info(REPO, ["config.json", "missing.bin"])
    assert info.size == len(MODEL["config.json"])
    with pytest.raises(Exception, match="401"):
        HfApi(endpoint=hub.url, token="hf_wrong").model_info(REPO)


def test_lfs_files_compare_by_sha256_regular_files_by_git_blob_sha1(run):
    """The Hub reports LFS/xet files by content sha256 and regular files by git blob sha1."""
    files = {f["path"]: f for f in local_files(run["model_dir"])}
    assert set(files) == set(MODEL)  # temp and hidden files are skipped
    weights = files["model.safetensors"]
    lfs = SimpleNamespace(lfs=SimpleNamespace(sha256=weights["sha256"]), blob_id="pointer-sha1")
    assert _remote_matches(weights, lfs)
    assert not _remote_matches(weights, SimpleNamespace(lfs=SimpleNamespace(sha256="0" * 64), blob_id="x"))
    assert _remote_matches(weights, SimpleNamespace(lfs=None, blob_id=git_blob_sha1(MODEL["model.safetensors"])))
