"""Where a store lives: a URL plus fsspec options, with JSON side files (the run lock is in
:mod:`pipeline.store.lock`).

Side files (partition manifests, the lock) are plain JSON objects next to the Zarr
metadata; nothing in a store is ever unpickled or executed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import zarr
import zarr.storage

from pipeline.errors import StoreError
from pipeline.io.fs import filesystem, is_remote, join


@dataclass(frozen=True)
class StoreLocation:
    """A store URL (local path or fsspec URL) and its storage options."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return is_remote(self.url)

    def fs_root(self):
        fs, root = filesystem(self.url, self.storage_options)
        return fs, root.rstrip("/")

    def zarr_store(self, *, read_only: bool = False):
        if not self.remote:
            path = self.url[len("file://") :] if self.url.startswith("file://") else self.url
            return zarr.storage.LocalStore(path, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options or None, read_only=read_only)

    def open_group(self, *, mode: str = "r") -> zarr.Group:
        try:
            return zarr.open_group(self.zarr_store(read_only=mode == "r"), mode=mode)
        except FileNotFoundError:
            raise StoreError(f"no audioprep store at {self.url}; run `audioprep run CATALOG` first") from None

    # --- JSON side files -------------------------------------------------------------
    def write_json(self, rel: str, obj: Any) -> None:
        fs, root = self.fs_root()
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        path = join(root, rel)
        if not self.remote:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half
        else:
            fs.pipe_file(path, data)  # object stores put whole objects atomically

    def create_json(self, rel: str, obj: Any) -> bool:
        """Write a local side file only if it does not exist yet (atomically); False if it does."""
        _, root = self.fs_root()
        path = join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file exists; readers never see it half written
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)

    def read_json(self, rel: str) -> Any | None:
        fs, root = self.fs_root()
        try:
            return json.loads(fs.cat_file(join(root, rel)))
        except FileNotFoundError:
            return None

    def list_json(self, rel_dir: str) -> list[str]:
        fs, root = self.fs_root()
        try:
            fs.invalidate_cache()
            names = fs.ls(join(root, rel_dir), detail=False)
        except FileNotFoundError:
            return []
        return sorted(n.rsplit("/", 1)[-1] for n in names if n.endswith(".json"))

    def delete(self, rel: str) -> None:
        fs, root = self.fs_root()
        try:
            fs.rm_file(join(root, rel))
        except FileNotFoundError:
            pass

    def exists(self, rel: str = "") -> bool:
        fs, root = self.fs_root()
        fs.invalidate_cache()
        return fs.exists(join(root, rel) if rel else root)
