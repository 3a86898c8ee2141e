"""How Arize Phoenix is started offline: shared by its tests and `docs/phoenix_screenshot.py`."""

from __future__ import annotations

import os


def phoenix_environment(workdir: str, port: int, grpc_port: int) -> dict[str, str]:
    """The environment for `phoenix serve` on loopback, with nothing of ours leaking in.

    Our own `OTEL_*` / `PHOENIX_*` variables are dropped (Phoenix would read them), its
    data goes to `workdir`, and it neither phones home nor loads anything from outside.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env.update(
        PHOENIX_WORKING_DIR=workdir,
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    return env
