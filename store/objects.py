"""Bytes the platform keeps for workspaces (chat files), behind one small interface: a directory
under the data dir (the embedded default) or any S3-compatible bucket (production)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from config.settings import Settings

CHUNK = 256 * 1024


class ObjectMissing(LookupError):
    pass


async def _chunks(handle: Any) -> AsyncIterator[bytes]:
    """A blocking file-like object's bytes, read off the event loop, closed at the end."""
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()


class ObjectStore(ABC):
    """Keys are relative paths ('workspaces/<id>/chat-uploads/<file>'); callers build them."""

    @abstractmethod
    async def put(self, key: str, source: BinaryIO, content_type: str) -> None: ...

    @abstractmethod
    def read(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; ObjectMissing (on the first chunk) when there is none."""

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; how many there were. Deleting nothing is fine."""


class DirectoryStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key outside the store: {key!r}")
        return path

    async def put(self, key: str, source: BinaryIO, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
            with partial.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            os.replace(partial, path)  # readers see the whole file or none

        await asyncio.to_thread(write)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        async for chunk in _chunks(handle):
            yield chunk

    async def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix)

        def remove() -> int:
            if not path.exists():
                return 0
            if path.is_file():  # a prefix that names one object
                path.unlink()
                return 1
            count = sum(1 for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
            return count

        return await asyncio.to_thread(remove)


class S3Store(ObjectStore):
    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self.client = client

    async def put(self, key: str, source: BinaryIO, content_type: str) -> None:
        await asyncio.to_thread(
            self.client.upload_fileobj, source, self.bucket, key, ExtraArgs={"ContentType": content_type}
        )

    async def read(self, key: str) -> AsyncIterator[bytes]:
        try:
            reply = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            raise ObjectMissing(key) from None
        async for chunk in _chunks(reply["Body"]):
            yield chunk

    async def delete_prefix(self, prefix: str) -> int:
        def remove() -> int:
            count = 0
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    reply = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    # Quiet mode reports only the failures, and without raising: those are not gone.
                    if reply.get("Errors"):
                        first = reply["Errors"][0]
                        raise OSError(f"{len(reply['Errors'])} object(s) not deleted ({first.get('Code')})")
                    count += len(keys)
            return count

        return await asyncio.to_thread(remove)


def object_store(settings: Settings) -> ObjectStore:
    if settings.files_store == "s3":
        import boto3

        if not settings.files_s3_bucket:
            raise ValueError("FILES_STORE=s3 needs FILES_S3_BUCKET")
        client = boto3.client(
            "s3",
            region_name=settings.files_s3_region,
            endpoint_url=settings.files_s3_endpoint_url or None,
        )
        return S3Store(settings.files_s3_bucket, client)
    return DirectoryStore(settings.data_dir / "files")


def workspace_prefix(workspace_id: str) -> str:
    return f"workspaces/{workspace_id}/"
