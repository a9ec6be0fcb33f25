"""Uploaded files (OpenAI Files API shape) on local disk, with a size cap and a TTL.

Layout: <directory>/<id>.bin holds the bytes, <id>.json the metadata. Ids are
`file-` + 128 random bits, so they cannot be guessed; anything else is refused before the
filesystem is touched. An upload is written to a temporary name and renamed only once it
is complete and probed, so a failed or cut upload leaves nothing behind."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFound

_ID = re.compile(r"^file-[0-9a-f]{32}$")


@dataclass
class StoredFile:
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int
    video: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """`clock`: seconds since the epoch (expiry times are epoch seconds, as OpenAI's)."""

    def __init__(self, directory: Path, ttl_s: float, clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self.clock = clock
        self.directory.mkdir(parents=True, exist_ok=True)

    def new_partial(self) -> tuple[str, Path]:
        file_id = "file-" + secrets.token_hex(16)
        return file_id, self.directory / f".{file_id}.partial"

    def commit(self, file_id: str, partial: Path, filename: str, purpose: str, video: dict) -> StoredFile:
        now = self.clock()
        stored = StoredFile(
            id=file_id,
            bytes=partial.stat().st_size,
            created_at=int(now),
            filename=os.path.basename(filename) or "upload",
            purpose=purpose,
            expires_at=math.ceil(now + self.ttl_s),  # whole seconds, as OpenAI's timestamps
            video=video,
        )
        os.replace(partial, self._data(file_id))
        self._meta(file_id).write_text(json.dumps(asdict(stored)))
        return stored

    def get(self, file_id: str) -> StoredFile:
        if not _ID.match(file_id):
            raise NotFound(f"No such file: {file_id!r}", param="file_id", code="file_not_found")
        try:
            stored = StoredFile(**json.loads(self._meta(file_id).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            raise NotFound(f"No such file: {file_id!r}", param="file_id", code="file_not_found") from None
        if stored.expires_at <= self.clock():
            self.delete(file_id)
            raise NotFound(f"No such file: {file_id!r} (expired)", param="file_id", code="file_not_found")
        return stored

    def path(self, file_id: str) -> Path:
        self.get(file_id)
        return self._data(file_id)

    def list(self) -> list[StoredFile]:
        self.purge_expired()
        files = []
        for meta in self.directory.glob("file-*.json"):
            try:
                files.append(self.get(meta.stem))
            except NotFound:
                continue
        return sorted(files, key=lambda f: f.created_at)

    def count(self) -> int:
        """Files held, for the store's limit (expired ones are purged first)."""
        self.purge_expired()
        return sum(1 for _ in self.directory.glob("file-*.json"))

    def delete(self, file_id: str) -> bool:
        if not _ID.match(file_id):
            return False
        existed = self._meta(file_id).exists()
        self._meta(file_id).unlink(missing_ok=True)
        self._data(file_id).unlink(missing_ok=True)
        return existed

    def purge_expired(self) -> int:
        now, purged = self.clock(), 0
        for meta in self.directory.glob("file-*.json"):
            try:
                if json.loads(meta.read_text())["expires_at"] <= now:
                    purged += self.delete(meta.stem)
            except (OSError, ValueError, KeyError):
                continue
        for partial in self.directory.glob(".file-*.partial"):  # left by a crash
            if partial.stat().st_mtime < now - 3600:
                partial.unlink(missing_ok=True)
        return purged

    def _data(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.bin"

    def _meta(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.json"
