"""Demo pipelines of the demo project, discovered at start-up and seeded by ``make run``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline_app import registry

DATA = Path(__file__).resolve().parent / "data"
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "that",
        "the",
        "to",
        "was",
        "with",
    ]
)


# demo-etl: parse JSON lines -> validate -> transform -> serialise
@registry.stage(description="Parse one JSON line; invalid JSON fails the item.")
def parse_json(line: str) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


@registry.stage(description="Drop orders without a customer or with a non-positive amount.")
def validate_order(order: dict[str, Any]) -> dict[str, Any] | None:
    if not order.get("customer") or not isinstance(order.get("amount"), int | float):
        return None
    return order if order["amount"] > 0 else None


@registry.stage(description="Normalise fields and compute the total with tax.")
def transform_order(order: dict[str, Any], tax_rate: float = 0.2) -> dict[str, Any]:
    return {
        "id": order["id"],
        "customer": str(order["customer"]).strip().title(),
        "amount": round(float(order["amount"]), 2),
        "total": round(float(order["amount"]) * (1 + tax_rate), 2),
    }


@registry.stage(description="Serialise to compact JSON.")
def serialise(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


# demo-words: lines -> words (fan-out) -> normalise -> drop stop words
@registry.stage(description="Split a line into words (fan-out).")
def split_words(line: str) -> Iterator[str]:
    yield from line.split()


@registry.stage(description="Lower-case and strip punctuation; empty words are filtered.")
def normalise_word(word: str) -> str | None:
    cleaned = "".join(ch for ch in word.lower() if ch.isalnum())
    return cleaned or None


@registry.stage(description="Filter stop words.")
def drop_stopwords(word: str) -> str | None:
    return None if word in STOPWORDS else word


# demo-hash: GIL-releasing CPU work on two workers per stage
@registry.stage(description="sha256 over a 64 KiB block, repeated (releases the GIL).")
def hash_block(number: int, rounds: int = 20) -> bytes:
    digest = number.to_bytes(8, "little") * 8192
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest() * 2048
    return hashlib.sha256(digest).digest()


@registry.stage(description="Hex-encode after one more hashing pass.")
def hex_digest(digest: bytes, rounds: int = 20) -> str:
    block = digest * 2048
    for _ in range(rounds):
        block = hashlib.sha256(block).digest() * 2048
    return hashlib.sha256(block).hexdigest()


# demo-bottleneck: fast -> slow -> fast
@registry.stage(description="A fast step.")
def quick_step(number: int) -> int:
    return number * 2


@registry.stage(description="The slow step (sleeps): the bottleneck the dashboard points at.")
def slow_step(number: int, seconds: float = 0.02) -> int:
    time.sleep(seconds)
    return number + 1


registry.register_pipeline(
    "demo-etl",
    description="Orders from JSON Lines: parse, validate, transform, serialise (some lines bad).",
    source="lines",
    source_params={"path": str(DATA / "orders.jsonl")},
    stages=["parse-json", "validate-order", "transform-order", "serialise"],
    sink="preview",
)
registry.register_pipeline(
    "demo-words",
    description="Fan-out text processing: lines to normalised words without stop words.",
    source="lines",
    source_params={"path": str(DATA / "words.txt")},
    stages=["split-words", "normalise-word", "drop-stopwords"],
    sink="preview",
)
registry.register_pipeline(
    "demo-hash",
    description="GIL-releasing sha256 stages with two workers each.",
    source="range",
    source_params={"count": 400},
    stages=[
        {"stage": "hash-block", "workers": 2},
        {"stage": "hex-digest", "workers": 2},
    ],
    sink="preview",
)
registry.register_pipeline(
    "demo-bottleneck",
    description="One slow stage between two fast ones, for the bottleneck view.",
    source="range",
    source_params={"count": 200},
    stages=["quick-step", "slow-step", "quick-step"],
    sink="preview",
)
