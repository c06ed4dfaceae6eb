"""Where a dataset job writes: a local folder (``file://``) or an S3 prefix (``s3://``, fsspec + s3fs).

Shards are always written into a local folder first by hipgen's format writers (every file atomic:
temp + rename). For a local destination that folder *is* the destination; for S3 each finished file
is then uploaded — an S3 object appears whole or not at all, so a reader never sees a partial file
there either. Small files (shard records, the manifest) go through :meth:`Destination.put`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from hipgen.data.images import write_atomic

# temp files of write_atomic (".name.XXXX.tmp") and of the webdataset writer (".name.tmp-PID")
_TEMP = re.compile(r"^\..+\.(tmp|tmp-\d+)$|^\..+\.[^.]+\.tmp$")


class DestinationError(OSError):
    """The destination cannot be used (missing bucket, not writable, not empty)."""


class DestinationUnavailableError(OSError):
    """The destination could not be checked just now (S3 unreachable or answering 5xx after botocore's
    own retries): unlike :class:`DestinationError` nothing is known to be wrong with the request, so
    callers answer UNAVAILABLE and a later try may succeed."""


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]


class Destination:
    """A dataset job's output root. Relative paths are POSIX and stay inside the root."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        parsed = urlparse(uri)
        self.scheme = parsed.scheme or "file"
        if self.scheme == "file":  # percent-decoded: Path.as_uri() writes a space as %20
            self.local_root: Path | None = Path(url2pathname(parsed.path) if parsed.scheme else uri)
            self._fs = None
            self._prefix = ""
        elif self.scheme == "s3":
            import fsspec

            self.local_root = None
            self._fs = fsspec.filesystem("s3", skip_instance_cache=True)  # endpoint/credentials of now
            self._prefix = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        else:
            raise DestinationError(f"{uri}: only file:// and s3:// destinations are written")

    # -- small files ---------------------------------------------------------------------------------
    def put(self, rel: str, data: bytes) -> None:
        """Write one file whole (atomic locally; one PUT on S3)."""
        if self.local_root is not None:
            write_atomic(self.local_root / rel, data)
        else:
            self._fs.pipe_file(f"{self._prefix}/{rel}", data)

    def get(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            if self.local_root is not None:
                return (self.local_root / rel).read_bytes()
            return self._fs.cat_file(f"{self._prefix}/{rel}")
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        if self.local_root is not None:
            return (self.local_root / rel).is_file()
        return bool(self._fs.exists(f"{self._prefix}/{rel}"))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.local_root is not None:
                (self.local_root / rel).unlink()
            else:
                self._fs.rm_file(f"{self._prefix}/{rel}")

    def listing(self) -> list[str]:
        """Every file under the root, relative, sorted (temp files included)."""
        if self.local_root is not None:
            if not self.local_root.is_dir():
                return []
            return sorted(
                p.relative_to(self.local_root).as_posix() for p in self.local_root.rglob("*") if p.is_file()
            )
        self._fs.invalidate_cache()
        n = len(self._prefix) + 1
        return sorted(p[n:] for p in self._fs.find(self._prefix))

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    # -- checks --------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise :class:`DestinationError` unless the root can be created and written."""
        try:
            if (
                self.local_root is not None
            ):  # checked without creating anything: a refused job leaves no trace
                existing = self.local_root
                while not existing.exists() and existing != existing.parent:
                    existing = existing.parent
                if not existing.is_dir() or not os.access(existing, os.W_OK):
                    raise DestinationError(f"{self.uri}: {existing} is not a writable folder")
            else:
                # fs.info, not fs.exists: exists() answers False for any error, so an S3 outage (5xx)
                # would read as a missing bucket; info() raises FileNotFoundError only for a 404
                bucket = self._prefix.split("/", 1)[0]
                try:
                    self._fs.info(bucket)
                except FileNotFoundError:
                    raise DestinationError(f"{self.uri}: bucket {bucket!r} does not exist") from None
                except PermissionError as e:
                    raise DestinationError(f"{self.uri}: access denied: {_first_line(e)}") from None
                except Exception as e:  # noqa: BLE001 - 5xx, connection refused (botocore's own errors)
                    raise DestinationUnavailableError(
                        f"{self.uri}: the store did not answer: {type(e).__name__}: {_first_line(e)}"
                    ) from None
        except (DestinationError, DestinationUnavailableError):
            raise
        except OSError as e:
            raise DestinationError(f"{self.uri}: {type(e).__name__}: {_first_line(e)}") from None

    def sweep_temp_files(self) -> int:
        """Remove temp files a killed writer left behind (locally; S3 never has partial objects)."""
        removed = 0
        if self.local_root is None or not self.local_root.is_dir():
            return 0
        for p in self.local_root.rglob(".*"):
            if p.is_file() and _TEMP.match(p.name):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
        return removed

    # -- shard staging -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A local folder to write a shard into: the root itself when local; a temp folder whose files
        are uploaded by :meth:`upload` when on S3 (and removed afterwards either way)."""
        if self.local_root is not None:
            self.local_root.mkdir(parents=True, exist_ok=True)
            yield self.local_root
            return
        tmp = Path(tempfile.mkdtemp(prefix="hipgen-shard-"))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def upload(self, staged: Path, rels: list[str]) -> None:
        """Copy the staged files ``rels`` to the destination (no-op when the staging is the root)."""
        if self.local_root is not None:
            return
        for rel in rels:
            self._fs.put_file(str(staged / rel), f"{self._prefix}/{rel}")


__all__ = ["Destination", "DestinationError", "DestinationUnavailableError"]
