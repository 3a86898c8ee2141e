"""An ordinary OpenAI app with no tracing code: run it under `opentelemetry-instrument`.

With OPENAI_API_KEY it calls the service (or OPENAI_BASE_URL); without, it starts the
bundled local server, so the compose examples work with no key at all.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack

import openai

from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer


def main() -> None:
    rounds = int(os.environ.get("APP_ROUNDS", "5"))
    with ExitStack() as stack:
        if not os.environ.get("OPENAI_API_KEY"):
            server = stack.enter_context(LocalOpenAIServer())
            os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-local-app")
        client = openai.OpenAI()
        messages = [{"role": "user", "content": "What's 1+1? Answer in one word."}]
        for i in range(rounds):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and i % 2:
                    break  # every other stream is left early: its tokens are estimated
            stream.close()
            print(f"round {i + 1}/{rounds} done", flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main()
