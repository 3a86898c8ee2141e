"""Helpers for the tests against real backends (Arize Phoenix, Prometheus).

The backends are real programs, installed by `tests/backends/install.sh` and found
through environment variables that `tests/run.sh` sets. A quick local run without them
skips these tests, saying why; under CI (`CI` set) a missing backend fails instead,
because a test that cannot fail in CI proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from openai.types.chat import ChatCompletionMessageParam

T = TypeVar("T")
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What's 1+1? Answer in one word."}
]
ROOT = Path(__file__).resolve().parents[2]
# Only loopback addresses, and never through a proxy that the environment may name.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def backend(variable: str, what: str) -> Path:
    """The executable that `variable` names: skips when unset (fails under CI)."""
    value = os.environ.get(variable, "")
    if not value:
        reason = (
            f"{variable} is not set: no {what} to test against (bash tests/backends/install.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    found = shutil.which(value)
    if found is None:
        pytest.fail(f"{variable}={value!r} is not an executable {what}", pytrace=False)
    return Path(found)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports that nothing listens on (the OS picks them;
    all are held until all are picked, so none is handed out twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET on loopback: (status, body); (0, b"") when nothing answers yet."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def http_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, f"GET {url}: HTTP {status} {body[:500]!r}"
    return json.loads(body)


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float, describe: Callable[[], str]
) -> T:
    """Poll `probe` (every 0.25 s) until it returns something; fail after `timeout`
    seconds, with `describe()` saying what was seen last."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s; {describe()}", pytrace=False)
        time.sleep(0.25)


class Service:
    """A backend process whose output goes to a file, to show when it misbehaves."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.process, self.log = name, process, log

    def output(self, tail: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]

    def wait_healthy(self, url: str, timeout: float) -> float:
        """Wait until `url` answers 200; fail at once, with its output, if it dies."""
        started = time.monotonic()

        def probe() -> bool | None:
            if self.process.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.process.returncode} before it was ready:\n"
                    f"{self.output()}",
                    pytrace=False,
                )
            return True if http_get(url, timeout=2)[0] == 200 else None

        wait_until(f"{self.name} ready at {url}", probe, timeout, self.output)
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s: bounded, and only our own process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def service(
    name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[Service]:
    """Run `argv` for the block's duration; stopped whatever happens inside."""
    handle: IO[bytes] = log.open("wb")
    try:
        process = subprocess.Popen(
            list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    finally:
        handle.close()  # the child has its own copy
    running = Service(name, process, log)
    try:
        yield running
    finally:
        running.stop()
