"""Azure OpenAI: the same instrumentation, provider `azure.ai.openai`, deployments as models.

    AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com \\
    AZURE_OPENAI_API_KEY=... AZURE_OPENAI_DEPLOYMENT=<deployment> \\
    OPENAI_API_VERSION=2024-10-21 python examples/azure_openai.py

Without AZURE_OPENAI_ENDPOINT it talks to the bundled local server's Azure paths, so it runs
anywhere. The span's `gen_ai.request.model` is the deployment name, `gen_ai.response.model` the
model the deployment served. Older Azure API versions reject `stream_options`: the first such
400 makes the instrumentation re-send the stream as written and stop asking that endpoint and
API version (or set OTEL_INSTRUMENTATION_OPENAI_USAGE_INJECT_STREAM_USAGE=false); those streams'
usage is then estimated, and marked so.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from opentelemetry.instrumentation.openai_usage import OpenAIUsageInstrumentor
from opentelemetry.instrumentation.openai_usage.localserver import LocalOpenAIServer


def main() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    OpenAIUsageInstrumentor().instrument(tracer_provider=provider)

    with ExitStack() as stack:
        endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        key = os.environ.get("AZURE_OPENAI_API_KEY", "local-azure-key")
        if not endpoint:
            endpoint = stack.enter_context(LocalOpenAIServer()).azure_endpoint
        deployment = os.environ.get("AZURE_OPENAI_DEPLOYMENT", "my-gpt-4o-mini")
        client = openai.AzureOpenAI(
            azure_endpoint=endpoint,
            azure_deployment=deployment,
            api_key=key,
            api_version=os.environ.get("OPENAI_API_VERSION", "2024-10-21"),
        )
        messages = [{"role": "user", "content": "What's 1+1? Answer in one word."}]
        stream = client.chat.completions.create(model=deployment, messages=messages, stream=True)
        print("streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    provider.shutdown()


if __name__ == "__main__":
    main()
