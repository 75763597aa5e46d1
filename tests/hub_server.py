"""A local stand-in for the Hugging Face Hub, speaking the wire protocol huggingface_hub 1.33 uses to upload.

Routes, payloads and response fields follow huggingface_hub's hf_api.py and _commit_api.py: the real client
talks to it unchanged (HfApi(endpoint=server.url) or HF_ENDPOINT). Everything is kept in memory so tests can
assert on what ARRIVED: every commit with its message and the bytes of every file.

Implemented (model repos only):
  GET  /api/agent-harnesses                     no auth; huggingface_hub fetches it for its user-agent
  GET  /api/whoami-v2
  POST /api/repos/create                        409 if the repo exists (the client swallows it for exist_ok)
  POST /api/validate-yaml                       called by create_commit when README.md is committed
  GET  /api/models/{ns}/{name}[/revision/{rev}] repo_info / model_info (?blobs=true adds size and blobId)
  GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]   list_repo_tree (?recursive=true)
  POST /api/models/{ns}/{name}/paths-info/{rev}      get_paths_info (form: paths=..., expand=...)
  GET  /api/models/{ns}/{name}/refs                  list_repo_refs
  POST /api/models/{ns}/{name}/branch/{branch}       create_branch (409 if it exists)
  POST /api/models/{ns}/{name}/preupload/{rev}       answers "regular" for every file: no LFS/xet transfer
  POST /api/models/{ns}/{name}/commit/{rev}          NDJSON: header, file (base64), deletedFile, deletedFolder
Every other request needs "Authorization: Bearer <the one valid token>", else 401.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    branch: str
    message: str
    files: dict[str, bytes]  # full tree after this commit
    added: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    log: list[Commit] = field(default_factory=list)  # every commit, in arrival order

    def head(self, rev: str) -> Commit | None:
        return self.commits.get(self.branches.get(rev, rev))


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class HubServer:
    """Start with `with HubServer(token) as hub:`; hub.url is the endpoint."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request seen
        self._failures: list[list] = []  # [remaining, status, path substring]
        self._lose_commit_responses = 0
        self._delays: list[tuple[str, float]] = []  # (path substring, seconds), each used once
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)  # port 0: a free port
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- test controls ------------------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 503, path_contains: str = "") -> None:
        """The next n requests whose path contains `path_contains` are answered `status` (not processed)."""
        self._failures.append([n, status, path_contains])

    def lose_next_commit_response(self) -> None:
        """The next commit is applied, but its response is a 503, as if the connection dropped."""
        self._lose_commit_responses += 1

    def delay_next_response(self, path_contains: str, seconds: float) -> None:
        """The next request whose path contains `path_contains` is applied at once but answered only after
        `seconds`: a client killed meanwhile never learns that its request took effect."""
        self._delays.append((path_contains, seconds))

    def commits(self, repo_id: str) -> list[Commit]:
        """Commits made by clients (not the initial one that repo creation makes)."""
        return self.repos[repo_id].log[1:] if repo_id in self.repos else []

    # -- request handling ---------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict, object]:
        path = urlsplit(raw_path).path
        with self._lock:
            status, extra, payload = self._handle(method, raw_path, headers, body)
            self.requests.append((method, path, status))
            delay = 0.0
            for i, (substring, seconds) in enumerate(self._delays):
                if substring in path:
                    delay = self._delays.pop(i)[1]
                    break
        time.sleep(delay)  # outside the lock: the test goes on looking at the Hub meanwhile
        return status, extra, payload

    def _handle(self, method, raw_path, headers, body):
        url = urlsplit(raw_path)
        for rule in self._failures:
            if rule[0] > 0 and rule[2] in url.path:
                rule[0] -= 1
                return rule[1], {}, {"error": f"injected failure {rule[1]}"}
        if url.path == "/api/agent-harnesses":  # public, fetched unauthenticated by the client's telemetry
            return 200, {}, {"standardEnvVars": [], "harnesses": {}}
        try:
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                raise HttpError(401, "You must be authenticated to access this resource")
            if auth.removeprefix("Bearer ") != self.token:
                raise HttpError(401, "Invalid credentials in Authorization header")
            parts = [unquote(p) for p in url.path.split("/")[1:]]  # split first: revisions may hold %2F
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            return (200, {}, self._dispatch(method, parts, query, headers, body))
        except HttpError as e:
            extra = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {})}
            return e.status, extra, {"error": e.message, **e.body}

    def _dispatch(self, method, parts, query, headers, body):
        if parts == ["api", "whoami-v2"] and method == "GET":
            return {"type": "user", "name": "tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
        if parts == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body))
        if parts == ["api", "validate-yaml"] and method == "POST":
            return {"errors": [], "warnings": []}
        if len(parts) < 5 or parts[:2] != ["api", "models"]:
            raise HttpError(404, f"no route {method} /{'/'.join(parts)}")
        repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HttpError(404, "Repository not found", "RepoNotFound")
        route = (method, rest[0] if rest else "")
        if route == ("GET", "") or (route == ("GET", "revision") and len(rest) == 2):
            return self._info(repo, rest[1] if rest else "main", query.get("blobs", "").lower() == "true")
        if route == ("GET", "refs"):
            return {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o}
                                 for b, o in repo.branches.items()], "converts": [], "tags": []}
        if len(rest) < 2:
            raise HttpError(404, f"no route {method} /{'/'.join(parts)}")
        if route == ("POST", "branch"):
            return self._create_branch(repo, rest[1], json.loads(body or b"{}"))
        commit = self._resolve(repo, rest[1])
        if route == ("GET", "tree"):
            prefix = "/".join(rest[2:]).strip("/")
            return self._tree(commit, prefix, query.get("recursive", "").lower() == "true")
        if route == ("POST", "paths-info"):
            paths = parse_qs(body.decode()).get("paths", [])
            entries = {e["path"]: e for e in self._tree(commit, "", recursive=True)}
            return [entries[p] for p in paths if p in entries]
        if route == ("POST", "preupload"):
            files = json.loads(body)["files"]
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               **({"oid": git_blob_sha1(commit.files[f["path"]])} if f["path"] in commit.files
                                  else {})} for f in files], "commitOid": commit.oid}
        if route == ("POST", "commit"):
            return self._commit(repo, rest[1], commit, body)
        raise HttpError(404, f"no route {method} /{'/'.join(parts)}")

    def _create_repo(self, payload: dict) -> dict:
        repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
        if repo_id in self.repos:
            # create_repo(exist_ok=True) swallows the 409 but still reads "url" from this body.
            raise HttpError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = self.repos[repo_id] = Repo(repo_id, private=payload.get("visibility") == "private")
        # Like the real Hub, a new repo starts with one commit holding .gitattributes.
        files = {".gitattributes": GITATTRIBUTES}
        self._add_commit(repo, "main", None, "initial commit", files, [], dict(files))
        return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def _create_branch(self, repo: Repo, branch: str, payload: dict) -> dict:
        if branch in repo.branches:
            raise HttpError(409, "Reference already exists")
        repo.branches[branch] = self._resolve(repo, payload.get("startingPoint") or "main").oid
        return {}

    def _resolve(self, repo: Repo, rev: str) -> Commit:
        commit = repo.head(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _info(self, repo: Repo, rev: str, blobs: bool) -> dict:
        commit = self._resolve(repo, rev)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # the Hub's format
        siblings = [{"rfilename": p, **({"size": len(d), "blobId": git_blob_sha1(d)} if blobs else {})}
                    for p, d in sorted(commit.files.items())]
        return {"_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
                "lastModified": now, "createdAt": now, "tags": [], "siblings": siblings}

    def _tree(self, commit: Commit, prefix: str, recursive: bool) -> list[dict]:
        base = f"{prefix}/" if prefix else ""
        entries: dict[str, dict] = {}
        for path, data in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            below = path[len(base):].split("/")
            depth = len(below) if recursive else 1
            for i in range(1, min(depth, len(below) - 1) + 1):  # folders on the way
                folder = base + "/".join(below[:i])
                entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                            "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if recursive or len(below) == 1:
                entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        return list(entries.values())

    def _commit(self, repo: Repo, rev: str, head: Commit, body: bytes) -> dict:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HttpError(400, "first NDJSON line must be the header")
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise HttpError(412, "A commit has happened since. Please refresh and try again.")
        if rev not in repo.branches:
            raise HttpError(400, f"can only commit to a branch, not {rev}")
        files, added, deleted = dict(head.files), {}, []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                added[value["path"]] = files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
                deleted.append(value["path"])
            elif key == "deletedFolder":
                gone = [p for p in files if p.startswith(value["path"].rstrip("/") + "/")]
                deleted += [p for p in gone if files.pop(p) is not None]
            else:  # lfsFile would mean the client uploaded to LFS/xet, which preupload never asked for
                raise HttpError(400, f"unsupported commit operation {key!r}")
        commit = self._add_commit(repo, rev, head.oid, header["summary"], files, deleted, added)
        if self._lose_commit_responses:
            self._lose_commit_responses -= 1
            raise HttpError(503, "connection lost after commit (injected)")
        return {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{repo.repo_id}/commit/"
                f"{commit.oid}", "hookOutput": "", "pullRequestUrl": None}

    def _add_commit(self, repo, branch, parent, message, files, deleted, added) -> Commit:
        seed = f"{repo.repo_id}\0{parent}\0{message}\0{next(self._counter)}".encode()
        oid = hashlib.sha1(seed + b"".join(git_blob_sha1(d).encode() for d in files.values())).hexdigest()
        commit = Commit(oid, parent, branch, message, files, added, deleted)
        repo.commits[oid], repo.branches[branch] = commit, oid
        repo.log.append(commit)
        return commit


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hung up (the retry tests' timeouts do) is expected: no traceback on the test's terminal."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, extra, payload = self.server.hub.handle(self.command, self.path, self.headers, body)  # type: ignore
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **extra}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, *args) -> None:  # keep test output clean
        pass
