"""Load test of `lstm-mt serve`: N concurrent clients for M seconds against a server on this machine.

    python scripts/load_test.py --checkpoint best.pt --clients 1,4,16 --seconds 20
    python scripts/load_test.py --url http://127.0.0.1:8000/ --clients 16 --seconds 20 --input test.de

With ``--checkpoint`` it starts its own server (`LocalServer`, ``--serve key=value`` passes options
such as ``threads=2``); with ``--url`` it uses a running one. Sentences come from ``--input`` (one
per line) or the checkpoint's source side of Multi30k test_2016_flickr in the data mirror. First
each sentence is translated alone, one request after the other (the reference, and a warm-up);
then, for each client count, every client sends requests back to back (``--per-request``
sentences each, its own keep-alive connection) until the time is up. Printed per client count:
requests/s, sentences/s, p50/p95/p99 latency, errors (503s apart) and answers that differ from
the reference. Exit status 1 if any request failed or any answer differed.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_mt.data.textio import read_lines
from lstm_mt.errors import LstmMtError
from lstm_mt.serve.local import LocalServer

DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class ClientStats:
    """What one client saw: latency per answered request (s), sentences answered, failures."""

    latencies: list[float] = field(default_factory=list)
    sentences: int = 0
    errors: int = 0
    busy: int = 0
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)


class Client:
    """One keep-alive HTTP connection to the server's /v1/translate."""

    def __init__(self, url: str, options: dict) -> None:
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        self.path = parts.path.rstrip("/") + "/v1/translate"
        self.options = options

    def translate(self, sentences: list[str]) -> tuple[int, dict]:
        """The status and JSON answer for ``sentences``."""
        body = json.dumps({"sentences": sentences, **self.options})
        self.connection.request("POST", self.path, body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def close(self) -> None:
        self.connection.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {"beam_size": args.beam_size} if args.beam_size else {}
    try:
        if args.url:
            check_loopback(args.url)
            return run(args, args.url, options)
        with LocalServer(args.checkpoint, "log_level=warning", *args.serve) as server:
            return run(args, server.url, options)
    except LstmMtError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--checkpoint", help="start a server for this checkpoint on a free local port")
    where.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--serve", action="append", default=[], metavar="KEY=VALUE", help="option for the server")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per client count (default 20)")
    parser.add_argument("--input", help="sentences, one per line (default: Multi30k test_2016_flickr)")
    parser.add_argument("--limit", type=int, default=200, help="use the first N sentences (default 200)")
    parser.add_argument("--per-request", type=int, default=1, help="sentences per request (default 1)")
    parser.add_argument("--beam-size", type=int, default=None, help="default: the server's")
    return parser.parse_args(argv)


def check_loopback(url: str) -> None:
    """Only this machine is a target: refuse any URL whose host is not a loopback address."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as error:
        raise LstmMtError(f"--url {url}: cannot resolve {host} ({error})") from None
    if not all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        raise LstmMtError(f"--url {url}: {host} is not this machine (loopback only)")


def run(args: argparse.Namespace, url: str, options: dict) -> int:
    sentences = load_sentences(args, url)
    print(f"{len(sentences)} sentences, {args.per_request} per request, options {options or 'server defaults'}")
    started = time.perf_counter()
    reference = sequential_reference(url, options, sentences)
    seconds = time.perf_counter() - started
    print(f"reference, one sentence per request in turn: {len(sentences) / seconds:.1f} sentences/s")
    print(
        f"{'clients':>7} {'requests':>8} {'req/s':>8} {'sent/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'503':>5} {'differ':>6} {'speedup':>7}"
    )
    failures, single = 0, None
    for clients in [int(count) for count in args.clients.split(",")]:
        stats = load(url, options, sentences, reference, clients, args.seconds, args.per_request)
        latencies = np.array([latency for s in stats for latency in s.latencies]) * 1000
        rate = sum(s.sentences for s in stats) / args.seconds
        single = single or rate
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else (np.nan,) * 3
        errors, busy = sum(s.errors for s in stats), sum(s.busy for s in stats)
        mismatches = [m for s in stats for m in s.mismatches]
        print(
            f"{clients:>7} {len(latencies):>8} {len(latencies) / args.seconds:>8.1f} {rate:>8.1f} {p50:>8.0f} "
            f"{p95:>8.0f} {p99:>8.0f} {errors:>6} {busy:>5} {len(mismatches):>6} {rate / single:>6.2f}x"
        )
        for source, expected, got in mismatches[:3]:
            print(f"    differs: {source!r}\n      alone: {expected!r}\n      under load: {got!r}")
        failures += errors + busy + len(mismatches)
    return 1 if failures else 0


def load_sentences(args: argparse.Namespace, url: str) -> list[str]:
    if args.input:
        path = args.input
    else:
        with urllib.request.urlopen(url.rstrip("/") + "/v1/info", timeout=60) as response:
            source = json.load(response)["languages"]["source"]
        mirror = Path(os.environ.get("LSTM_MT_DATA_MIRROR") or DEFAULT_MIRROR)
        path = str(mirror / "multi30k" / "raw" / f"test_2016_flickr.{source}.gz")
    sentences = [line for line in read_lines(path) if line.strip()][: args.limit]
    if not sentences:
        raise LstmMtError(f"{path}: no sentences")
    return sentences


def sequential_reference(url: str, options: dict, sentences: list[str]) -> dict[str, str]:
    """Each sentence translated alone, one request at a time."""
    client, reference = Client(url, options), {}
    for sentence in sentences:
        status, answer = client.translate([sentence])
        if status != 200:
            raise LstmMtError(f"reference request failed with {status}: {answer}")
        reference[sentence] = answer["translations"][0]["text"]
    client.close()
    return reference


def load(
    url: str, options: dict, sentences: list[str], reference: dict, clients: int, seconds: float, per_request: int
) -> list[ClientStats]:
    """``clients`` threads sending requests back to back until ``seconds`` have passed."""
    stats = [ClientStats() for _ in range(clients)]
    deadline = time.perf_counter() + seconds
    start = threading.Barrier(clients)

    def client_loop(number: int) -> None:
        client, mine = Client(url, options), stats[number]
        position = number * len(sentences) // clients  # clients start at different sentences
        start.wait()
        while time.perf_counter() < deadline:
            batch = [sentences[(position + k) % len(sentences)] for k in range(per_request)]
            position += per_request
            sent = time.perf_counter()
            try:
                status, answer = client.translate(batch)
            except (OSError, http.client.HTTPException, ValueError):
                mine.errors += 1
                client.close()
                client = Client(url, options)
                continue
            if status == 503:
                mine.busy += 1
                continue
            if status != 200:
                mine.errors += 1
                continue
            mine.latencies.append(time.perf_counter() - sent)
            mine.sentences += len(batch)
            for source, result in zip(batch, answer["translations"]):
                if result["text"] != reference[source]:
                    mine.mismatches.append((source, reference[source], result["text"]))
        client.close()

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stats


if __name__ == "__main__":
    sys.exit(main())
