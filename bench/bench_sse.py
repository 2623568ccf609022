"""Throughput of our event-stream decoder against httpx-sse and the official openai client.

A legacy fine-tune stream replayed after a reconnect can be hundreds of thousands of events, and the
hook decodes it on an Airflow worker, so the decoder's rate matters. One ~50 MB stream is built in
memory (legacy fine-tune events as ``data: {json}`` blocks, some CRLF, some multi-line data, some
``data:`` without the space, non-ASCII messages, ``: keep-alive`` comments, a final ``[DONE]``), cut
into network-like chunks, and decoded in the same run, rounds interleaved, by:

- ``airflow_ftevents.core.sse.SSEDecoder`` (ours);
- httpx-sse: what ``EventSource.iter_sse()`` runs over ``Response.iter_text()`` (httpx's incremental
  UTF-8 ``TextDecoder`` and ``TextChunker``, then ``httpx_sse._decoders.SSELineDecoder`` and
  ``SSEDecoder``), fed the same chunks without a network or a Response object;
- openai: ``openai._streaming.SSEDecoder().iter_bytes(...)``.

All three must yield the same number of events with the same data before anything is timed.

    python bench/bench_sse.py [--size-mb 50] [--rounds 5] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from results_md import replace_section

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import httpx_sse  # noqa: E402
from httpx._decoders import TextChunker, TextDecoder  # noqa: E402
from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder  # noqa: E402
from httpx_sse._decoders import SSELineDecoder  # noqa: E402
from openai._streaming import SSEDecoder as OpenAISSEDecoder  # noqa: E402

from airflow_ftevents.core.sse import SSEDecoder  # noqa: E402

SECTION = "## SSE decoder throughput"
OURS = "airflow_ftevents SSEDecoder"
HTTPX_SSE = f"httpx-sse {version('httpx-sse')} (iter_sse path)"
OPENAI = f"openai {version('openai')} SSEDecoder.iter_bytes"


# -- the stream -----------------------------------------------------------------------------------


def build_stream(target: int, seed: int = 7) -> tuple[bytes, list[str]]:
    """A legacy fine-tune event stream of about ``target`` bytes, and the data of each event in it."""
    rng = random.Random(seed)
    models = ["curie", "davinci", "babbage", "ada"]

    def message(i: int) -> str:
        kind = rng.randrange(10)
        if kind < 5:
            return f"Step {i}/400000: training loss={rng.random():.4f}"
        if kind == 5:
            return f"Completed epoch {i % 4 + 1}/4"
        if kind == 6:
            return f"Uploaded model: {rng.choice(models)}:ft-acme-2023-{i % 12 + 1:02d}-01 🚀"
        if kind == 7:
            return f"Étape {i} : perte d'entraînement={rng.random():.3f}"
        if kind == 8:
            return f"訓練ステップ {i} 完了 ✅"
        return "Fine-tune enqueued. Queue number: 0"

    parts: list[bytes] = []
    datas: list[str] = []
    size = 0
    i = 0
    while size < target:
        i += 1
        event = {
            "object": "fine-tune-event",
            "level": "warn" if i % 97 == 0 else "info",
            "message": message(i),
            "created_at": 1_690_000_000 + i // 7,
        }
        roll = rng.random()
        if roll < 0.05:  # pretty-printed: one data line per JSON line
            data = json.dumps(event, ensure_ascii=False, indent=1)
            block = "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"
        else:
            data = json.dumps(event, ensure_ascii=False)
            if roll < 0.15:
                block = f"data: {data}\r\n\r\n"
            elif roll < 0.20:
                block = f"data:{data}\n\n"
            else:
                block = f"data: {data}\n\n"
        if i % 50 == 0:
            block += ": keep-alive\n\n"
        encoded = block.encode()
        parts.append(encoded)
        datas.append(data)
        size += len(encoded)
    parts.append(b"data: [DONE]\n\n")
    datas.append("[DONE]")
    return b"".join(parts), datas


def cut_fixed(stream: bytes, size: int) -> list[bytes]:
    """Chunks of ``size`` bytes, like reads of a fixed buffer size."""
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def cut_random(stream: bytes, low: int, high: int, seed: int) -> list[bytes]:
    """Chunks of random sizes in [low, high], like TCP reads of a live connection."""
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(stream):
        n = rng.randint(low, high)
        chunks.append(stream[i : i + n])
        i += n
    return chunks


# -- the three decoders, each as "chunks in, events out" ---------------------------------------------


def ours(chunks: Iterable[bytes]) -> Iterator[Any]:
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


def httpx_sse_path(chunks: Iterable[bytes]) -> Iterator[Any]:
    """``EventSource.iter_sse()`` over ``Response.iter_text()``, minus the response object."""

    def iter_text() -> Iterator[str]:  # httpx.Response.iter_text()
        decoder = TextDecoder(encoding="utf-8")
        chunker = TextChunker(chunk_size=None)
        for byte_content in chunks:
            yield from chunker.decode(decoder.decode(byte_content))
        yield from chunker.decode(decoder.flush())
        yield from chunker.flush()

    def iter_lines() -> Iterator[str]:  # httpx_sse._api._iter_sse_lines()
        decoder = SSELineDecoder()
        for text in iter_text():
            yield from decoder.decode(text)
        yield from decoder.flush()

    decoder = HttpxSSEDecoder()  # EventSource.iter_sse()
    for line in iter_lines():
        line = line.rstrip("\n")
        sse = decoder.decode(line)
        if sse is not None:
            yield sse


def httpx_sse_real(chunks: list[bytes]) -> Iterator[Any]:
    """The library entry point itself, on an in-memory response: proves the path above is faithful."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    return httpx_sse.EventSource(response).iter_sse()


def openai_path(chunks: Iterable[bytes]) -> Iterator[Any]:
    return OpenAISSEDecoder().iter_bytes(iter(chunks))


DECODERS: dict[str, Callable[[list[bytes]], Iterator[Any]]] = {
    OURS: ours,
    HTTPX_SSE: httpx_sse_path,
    OPENAI: openai_path,
}


# -- checking and timing ----------------------------------------------------------------------------


def fingerprint(pairs: Iterable[tuple[str, str]]) -> tuple[int, str]:
    """Count and digest of (event type, data) pairs, in order."""
    digest = hashlib.sha256()
    count = 0
    for event, data in pairs:
        count += 1
        digest.update(f"{event}\0{data}\0".encode())
    return count, digest.hexdigest()


def check(chunkings: dict[str, list[bytes]], datas: list[str]) -> None:
    """Every decoder, on every chunking, must give exactly the events that were written."""

    def pairs(events: Iterable[Any]) -> Iterator[tuple[str, str]]:
        return ((sse.event or "message", sse.data) for sse in events)  # openai says None for "message"

    expected = fingerprint(("message", data) for data in datas)
    for cut, chunks in chunkings.items():
        got = {name: fingerprint(pairs(run(chunks))) for name, run in DECODERS.items()}
        got["httpx-sse EventSource.iter_sse() on a Response"] = fingerprint(pairs(httpx_sse_real(chunks)))
        for name, result in got.items():
            if result != expected:
                raise SystemExit(
                    f"{name} on {cut}: {result[0]} events, expected {expected[0]}, or wrong data"
                )


def consume(run: Callable[[list[bytes]], Iterator[Any]], chunks: list[bytes]) -> tuple[float, int]:
    """CPU seconds to decode all chunks, touching every event as a caller would, and the event count.

    CPU time of this process, not wall time: on a shared machine the wall clock also counts the time
    other processes held the CPU, which made wall-clock ratios swing by 2x between runs.
    """
    start = time.process_time()
    count = 0
    for _ in run(chunks):
        count += 1
    return time.process_time() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="stream size in MiB (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per chunking (default 5)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()

    stream, datas = build_stream(int(args.size_mb * 1024 * 1024))
    mb = len(stream) / 1e6
    chunkings = {
        "16 KiB reads": cut_fixed(stream, 16 * 1024),
        "random 1 B-64 KiB reads": cut_random(stream, 1, 64 * 1024, seed=3),
        "random 64 B-1 KiB reads": cut_random(stream, 64, 1024, seed=5),
    }
    print(f"stream: {mb:.1f} MB, {len(datas)} events; checking that all decoders agree...", flush=True)
    check(chunkings, datas)

    times: dict[tuple[str, str], list[float]] = {(c, n): [] for c in chunkings for n in DECODERS}
    names = list(DECODERS)
    for round_no in range(args.rounds):
        for cut, chunks in chunkings.items():
            order = names[round_no % len(names) :] + names[: round_no % len(names)]  # rotate who goes first
            for name in order:
                seconds, count = consume(DECODERS[name], chunks)
                if count != len(datas):
                    raise SystemExit(f"{name}: {count} events, expected {len(datas)}")
                times[(cut, name)].append(seconds)
        print(f"round {round_no + 1}/{args.rounds} done", flush=True)

    rows = [
        "| chunks | decoder | best MB/s | median MB/s | median events/s | ours / this (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    summary = []
    for cut in chunkings:
        ours_median = statistics.median(times[(cut, OURS)])
        for name in names:
            best = min(times[(cut, name)])
            median = statistics.median(times[(cut, name)])
            rows.append(
                f"| {cut} | {name} | {mb / best:.1f} | {mb / median:.1f} | {len(datas) / median:,.0f} "
                f"| {median / ours_median:.2f}x |"
            )
        peers = [n for n in names if n != OURS]
        fastest = min(peers, key=lambda n: statistics.median(times[(cut, n)]))
        ratio_median = statistics.median(times[(cut, fastest)]) / ours_median
        ratio_best = min(times[(cut, fastest)]) / min(times[(cut, OURS)])
        summary.append(
            f"- {cut}: ours / fastest peer ({fastest.split(' ')[0]}) = **{ratio_median:.2f}x** on medians, "
            f"{ratio_best:.2f}x on best rounds"
        )
    table = "\n".join(rows)
    print()
    print(table)
    print()
    print("\n".join(summary))

    if args.no_write:
        return
    command = (
        "python bench/bench_sse.py"
        + (f" --size-mb {args.size_mb:g}" if args.size_mb != 50 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
    )
    section = (
        f"{SECTION}\n\n"
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, Python {platform.python_version()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work; "
        f"httpx-sse {version('httpx-sse')}, httpx {version('httpx')}, openai {version('openai')}).\n\n"
        f"One in-memory stream of {mb:.1f} MB and {len(datas):,} legacy fine-tune events (`data: {{json}}` "
        "blocks; 10% CRLF, 5% multi-line data, 5% `data:` without the space, non-ASCII messages, a "
        "`: keep-alive` comment every 50 events, a final `[DONE]`), cut three ways and decoded by each "
        f"decoder in {args.rounds} interleaved rounds. MB = 10^6 bytes per second of the process's CPU "
        "time (`time.process_time()`, as the machine is shared); every event is iterated by the caller. "
        "Before timing, all decoders (and httpx-sse's real `EventSource.iter_sse()` on an "
        "`httpx.Response`) are checked to give the same events with the same data. The httpx-sse row "
        "times its decoding path without a response object, its best case.\n\n"
        f"{table}\n\n" + "\n".join(summary) + "\n"
    )
    replace_section(SECTION, section)
    print(f"\nwrote {SECTION!r} in bench/RESULTS.md")


if __name__ == "__main__":
    main()
