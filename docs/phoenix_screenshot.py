"""Reproduces docs/phoenix-streamed-call.png: a traced streamed call, seen in Phoenix's UI.

    bash tests/backends/install.sh && apt-get install -y chromium
    .venv-test-latest/bin/python docs/phoenix_screenshot.py [out.png]

Starts `phoenix serve` on loopback, sends one streamed chat call (no include_usage: the
instrumentation asks for usage) through the real openai SDK to the bundled server,
exports its span over OTLP/HTTP, opens the span in headless Chromium, switches to its
Attributes tab and saves a screenshot. Chromium is driven over the DevTools protocol with
a few lines of stdlib websocket code, so nothing beyond the test venv is needed.
Not run by CI: the picture is made once, by hand, and committed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for the tests' way of starting Phoenix
from tests.backends.phoenix import phoenix_environment  # noqa: E402

PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"
CHROMIUM = "/usr/bin/chromium"
PROJECT = "openai-usage-demo"
WIDTH, HEIGHT = 1400, 1640
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str) -> bytes:
    with OPENER.open(url, timeout=5) as response:
        return bytes(response.read())


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def send_streamed_call(phoenix_url: str) -> str:
    """One traced streamed call, exported to Phoenix; returns its span id (hex)."""
    provider = TracerProvider(resource=Resource({"openinference.project.name": PROJECT}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{phoenix_url}/v1/traces")))
    instrumentor = OpenAIUsageInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    usage = {"prompt_tokens": 21, "completion_tokens": 5}
    with LocalOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-local-demo")
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What's 1+1? Answer in one word."}],
            stream=True,
            extra_headers={"x-mock-usage": json.dumps(usage), "x-mock-reply": "Two."},
        )
        print("reply:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
        client.close()
    instrumentor.uninstrument()
    provider.shutdown()
    deadline = time.monotonic() + 30  # Phoenix stores what it receives a moment later
    while True:
        try:
            spans = json.loads(get(f"{phoenix_url}/v1/projects/{PROJECT}/spans"))["data"]
        except OSError:  # 404 until the project exists
            spans = []
        if spans:
            return str(spans[0]["context"]["span_id"])
        if time.monotonic() > deadline:
            raise TimeoutError("the span did not reach Phoenix")
        time.sleep(0.5)


class DevTools:
    """The smallest DevTools-protocol client: one page's websocket, text frames only."""

    def __init__(self, ws_url: str) -> None:
        host_port, path = ws_url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id = 0

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "DevTools closed the connection"
            data += chunk
        return data

    def _recv_message(self) -> dict[str, Any]:
        payload = b""
        while True:
            first, second = self._recv_exact(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._recv_exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._recv_exact(8))[0]
            payload += self._recv_exact(length)
            if first & 0x80:  # FIN
                message: dict[str, Any] = json.loads(payload)
                return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        data = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        else:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        while True:
            message = self._recv_message()
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)[
            "result"
        ].get("value")

    def wait_for(self, expression: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.5)


def screenshot(url: str, out: Path) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "--hide-scrollbars",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/json/version", 30)
            pages = json.loads(get(f"http://127.0.0.1:{port}/json/list"))
            page = next(p for p in pages if p["type"] == "page")
            tools = DevTools(page["webSocketDebuggerUrl"])
            tools.call("Page.enable")
            # Tall enough for the span's whole attribute table, ours and Phoenix's own.
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=WIDTH,
                height=HEIGHT,
                deviceScaleFactor=1,
                mobile=False,
            )
            tools.call("Page.navigate", url=url)
            tab = "[...document.querySelectorAll('[role=tab]')]"
            tab += ".find(t => t.textContent === 'Attributes')"
            tools.wait_for(f"!!({tab})", 30)
            tools.evaluate(
                f"(() => {{ const t = {tab}; t.dispatchEvent(new PointerEvent('pointerdown', "
                "{bubbles: true})); t.click(); })()"
            )
            tools.wait_for("document.body.innerText.includes('gen_ai.usage.input_tokens')", 15)
            time.sleep(1.5)  # let the code view finish laying out
            png = tools.call("Page.captureScreenshot", format="png")["data"]
            out.write_bytes(base64.b64decode(png))
        finally:
            browser.terminate()
            browser.wait(15)


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "phoenix-streamed-call.png"
    port, grpc_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="phoenix-") as workdir:
        env = phoenix_environment(workdir, port, grpc_port)
        log = (Path(workdir) / "phoenix.log").open("wb")
        phoenix = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/healthz", 90)
            span_id = send_streamed_call(url)
            screenshot(f"{url}/redirects/spans/{span_id}", out)
        finally:
            phoenix.terminate()
            phoenix.wait(15)
            log.close()
    print(f"saved {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
