"""A small HTTP server on 127.0.0.1 that answers like the Hugging Face Hub for model and Space repos: enough
of the API for ``huggingface_hub.snapshot_download`` of a model (repo info, tree listing, resolve with
X-Repo-Commit / ETag / Content-Length) and for ``create_repo`` + ``upload_folder`` (validate-yaml, tree
listing, preupload, NDJSON commit with regular uploads and deletions). Spaces are kept under the key
``spaces/ORG/NAME``, as the Hub keeps them apart from models.

Run the real ``huggingface_hub`` against it with ``HF_ENDPOINT=<url>`` (and ``HF_HUB_DISABLE_XET=1`` for
uploads: the Xet storage protocol is not emulated).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40

    def commit(self, files: dict[str, bytes], deleted: tuple[str, ...] = ()) -> str:
        for path in deleted:
            self.files.pop(path, None)
        self.files.update(files)
        digest = hashlib.sha1(self.sha.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + git_blob_oid(self.files[path]).encode())
        self.sha = digest.hexdigest()
        return self.sha


def repo_key(kind: str, repo_id: str) -> str:
    """``hub.repos`` key of a repo: ``ORG/NAME`` for a model, ``spaces/ORG/NAME`` for a Space."""
    return repo_id if kind == "models" else f"{kind}/{repo_id}"


class FakeHub:
    """``with FakeHub() as hub:`` serves ``hub.repos`` at ``hub.url`` from a thread."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []      # "METHOD path" of every request, for assertions
        self.auth_headers: list[str] = []  # Authorization headers seen on writes
        self.validated: list[str] = []     # model cards sent to /api/validate-yaml
        self.created: list[dict] = []      # payloads of /api/repos/create
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                     head: bool = False) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def send_json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> None:
                self.send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

            def not_found(self, code: str = "RepoNotFound") -> None:
                self.send_json({"error": f"{code}: {self.path}"}, 404,
                               {"X-Error-Code": code, "X-Error-Message": "Repository not found"})

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                hub.requests.append(f"{'HEAD' if head else 'GET'} {self.path}")
                path = unquote(urlparse(self.path).path)
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                    repo = hub.repos.get(m[1])
                    if repo is None:
                        return self.not_found()
                    return self.send_json({"id": m[1], "modelId": m[1], "sha": repo.sha, "private": False,
                                           "siblings": [{"rfilename": f} for f in sorted(repo.files)]})
                if m := re.fullmatch(r"/api/(models|spaces)/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
                    repo = hub.repos.get(repo_key(m[1], m[2]))
                    if repo is None:
                        return self.not_found()
                    return self.send_json([{"type": "file", "path": f, "size": len(data), "oid": git_blob_oid(data)}
                                           for f, data in sorted(repo.files.items())])
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    repo = hub.repos.get(m[1])
                    if repo is None:
                        return self.not_found()
                    if m[3] not in repo.files:
                        return self.not_found("EntryNotFound")
                    data = repo.files[m[3]]
                    return self.send(200, data, {"X-Repo-Commit": repo.sha, "ETag": f'"{git_blob_oid(data)}"',
                                                 "Content-Type": "application/octet-stream"}, head=head)
                self.not_found("EndpointNotFound")

            def do_POST(self) -> None:
                hub.requests.append(f"POST {self.path}")
                hub.auth_headers.append(self.headers.get("Authorization", ""))
                path = unquote(urlparse(self.path).path)
                data = self.body()
                if path == "/api/repos/create":
                    payload = json.loads(data)
                    repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
                        else payload["name"]
                    hub.created.append(payload)
                    hub.repos.setdefault(repo_key(payload.get("type", "model") + "s", repo_id), Repo())
                    return self.send_json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":  # the Hub checks a model card's YAML before a commit
                    import yaml
                    content = json.loads(data)["content"]
                    hub.validated.append(content)
                    try:
                        meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else None
                        assert isinstance(meta, dict), "no YAML front matter"
                    except Exception as e:
                        return self.send_json({"errors": [{"message": str(e)}], "warnings": []}, 400)
                    return self.send_json({"errors": [], "warnings": []})
                if m := re.fullmatch(r"/api/(models|spaces)/([^/]+/[^/]+)/preupload/([^/]+)", path):
                    if repo_key(m[1], m[2]) not in hub.repos:
                        return self.not_found()
                    files = json.loads(data)["files"]
                    return self.send_json({"files": [{"path": f["path"], "uploadMode": "regular",
                                                      "shouldIgnore": False} for f in files]})
                if m := re.fullmatch(r"/api/(models|spaces)/([^/]+/[^/]+)/commit/([^/]+)", path):
                    key = repo_key(m[1], m[2])
                    repo = hub.repos.get(key)
                    if repo is None:
                        return self.not_found()
                    files, deleted = {}, []
                    for line in data.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            v = item["value"]
                            assert v.get("encoding") == "base64", v
                            files[v["path"]] = base64.b64decode(v["content"])
                        elif item["key"] == "deletedFile":
                            deleted.append(item["value"]["path"])
                    sha = repo.commit(files, tuple(deleted))
                    return self.send_json({"commitUrl": f"{hub.url}/{key}/commit/{sha}", "commitOid": sha,
                                           "pullRequestUrl": None, "success": True})
                self.not_found("EndpointNotFound")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_folder(self, repo_id: str, folder: Path) -> str:
        """Publish every file of ``folder`` as one commit of ``repo_id``; returns the commit sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        return repo.commit({p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()})

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
