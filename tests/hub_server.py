"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving folders as model repositories, for tests.

It answers what huggingface_hub's `list_repo_files` and `hf_hub_download` ask (run with HF_ENDPOINT set to
`HubServer.url`):

    GET  /api/models/ORG/REPO/tree/REV?recursive=...   the files: [{"type": "file", "path", "size", "oid"}]
    HEAD /ORG/REPO/resolve/REV/PATH                     X-Repo-Commit, ETag, Content-Length
    GET  /ORG/REPO/resolve/REV/PATH                     the bytes

with the X-Error-Code header huggingface_hub maps to its errors (RepoNotFound, RevisionNotFound,
EntryNotFound). REV is "main" or the repository's commit (a hash of its files). `requests` records
every request (and the token it carried), so tests can tell whether and how the Hub was asked.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse
from pathlib import Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HubServer:
    """Repositories `repos` ({"org/name": folder}) served on 127.0.0.1 in a background thread."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = {name: Path(folder) for name, folder in repos.items()}
        self.requests: list[tuple[str, str, str | None]] = []   # method, path, Authorization header
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def files(self, repo: str) -> dict[str, Path]:
        """The repository's files by path in it."""
        root = self.repos[repo]
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    def commit(self, repo: str) -> str:
        """A 40-hex commit id that changes with the repository's files."""
        h = hashlib.sha1()
        for path, f in self.files(repo).items():
            h.update(path.encode() + b"\0" + _sha(f.read_bytes()).encode())
        return h.hexdigest()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _fail(self, code: str, commit: str | None = None) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                api = path.startswith("/api/models/")
                parts = path.removeprefix("/api/models/" if api else "/").split("/")
                repo, kind, rev, rest = "/".join(parts[:2]), parts[2:3], urllib.parse.unquote(
                    "/".join(parts[3:4])), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._fail("RepoNotFound")
                commit = hub.commit(repo)
                if rev not in ("main", commit):
                    return self._fail("RevisionNotFound")
                files = hub.files(repo)
                if api and kind == ["tree"]:
                    data = json.dumps([{"type": "file", "path": p, "size": f.stat().st_size,
                                        "oid": hashlib.sha1(f.read_bytes()).hexdigest()}
                                       for p, f in files.items()]).encode()
                    return self._send(data, body, {"Content-Type": "application/json"})
                if not api and kind == ["resolve"]:
                    if rest not in files:
                        return self._fail("EntryNotFound", commit)
                    data = files[rest].read_bytes()
                    return self._send(data, body, {"X-Repo-Commit": commit, "ETag": f'"{_sha(data)}"'})
                self._fail("EntryNotFound", commit)

            def _send(self, data: bytes, body: bool, headers: dict[str, str]) -> None:
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler


def forbid_network() -> None:
    """Make every connection to a host other than this machine's loopback fail (for child processes under test)."""
    import socket

    connect = socket.socket.connect
    getaddrinfo = socket.getaddrinfo

    def local(host: object) -> bool:
        return host in ("127.0.0.1", "::1", "localhost")

    def guarded_connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if not local(host) and self.family != socket.AF_UNIX:
            raise OSError(f"test tried to reach the network: {address!r}")
        return connect(self, address)

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not local(host):
            raise OSError(f"test tried to resolve {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.getaddrinfo = guarded_getaddrinfo
