#!/usr/bin/env python3
"""Writes the hostile-input corpus: one JSONL file per case, and cases.json with each case's rule
and what echotrace must do with it.

    python3 services/echotrace/tests/hostile_corpus.py OUT_DIR [--small]

`tests/hostile_input.rs` runs every case through `echotrace replay` (peak resident memory per
case) and through the Kafka consumer. `--small` leaves out or shrinks the cases too large for
librdkafka's mock cluster (it stalls on messages of several megabytes; a real broker takes them,
`tests/broker_e2e.rs`). The standard library only.
"""

import json
import sys
from pathlib import Path

BASE = "2026-11-01T09:00:00Z"


def post(pid, text, minute=0, **extra):
    """A valid post; `extra` adds or replaces fields (author fields go in `author`)."""
    body = {
        "id": pid,
        "platform": pid.split(":")[0],
        "author": {"id": "a-" + pid, "handle": "h"},
        "created_at": f"2026-11-01T09:{minute:02d}:00Z",
        "text": text,
    }
    body.update(extra)
    return json.dumps(body, ensure_ascii=False).encode()


# Three unrelated claims, so the cases stay apart when the consumer reads them as one stream.
CLAIM = "Maintainer Dana Whitlock secretly rejected the safety patches for the parser library"
CLAIM_2 = "Harbour authority confirms the old swing bridge will close for six weeks of repairs"
CLAIM_3 = "Volunteers planted four thousand oak saplings along the river before the spring floods"


def cases(small):
    """(name, rule, lines, expect): expect has `posts` (processed, duplicates excluded),
    `dead_letters` ({kind: count}), `duplicates`, and `parents` ({post id: "parent-id edge-kind",
    or None for no parent})."""
    nested = "[" * 100_000 + "]" * 100_000
    yield (
        "invalid_utf8",
        "bytes that are not UTF-8 are dead-lettered as invalid_utf8",
        [b'{"id":"x:1","text":"\xff\xfe\xfd"}', b"\xc3\x28 not utf-8 at all"],
        {"posts": 0, "dead_letters": {"invalid_utf8": 2}},
    )
    yield (
        "invalid_json",
        "what does not parse as a post object is dead-lettered with the parser's reason",
        [b'{"id":"x:1","text":"cut off', b"[1, 2, 3]", b"null", b"{}", b'{"id": 5}'],
        {"posts": 0, "dead_letters": {"invalid_json": 1, "invalid_field": 3, "missing_field": 1}},
    )
    yield (
        "deep_nesting",
        "unknown fields are skipped however deep (100,000 levels; the parser skips without recursing) and the post "
        "processed; nesting where a known field expects a value is invalid_field",
        [
            post("x:deep", "a post carrying a deeply nested extra field")[:-1] + b',"extra":' + nested.encode() + b"}",
            post("x:deeper", "nested where the urls go")[:-1] + b',"urls":' + nested.encode() + b"}",
        ],
        {"posts": 1, "dead_letters": {"invalid_field": 1}},
    )
    yield (
        "huge_text",
        "a 10 MB text (1 MB with --small) is over the message limit: too_large, read once",
        [post("x:huge", "a" * ((1 if small else 10) << 20))],
        {"posts": 0, "dead_letters": {"too_large": 1}},
    )
    if not small:
        yield (
            "huge_line",
            "a 64 MB line (in replay) is skipped to its end without being held, and dead-lettered as too_large",
            [b"x" * (64 << 20)],
            {"posts": 0, "dead_letters": {"too_large": 1}},
        )
        yield (
            "million_urls",
            "an array of a million URLs is over the message limit: too_large",
            [post("x:urls", "so many links", urls=[f"https://e.example/{i}" for i in range(1_000_000)])],
            {"posts": 0, "dead_letters": {"too_large": 1}},
        )
    yield (
        "many_urls_and_mentions",
        "thousands of URLs and mentions within the limit: stored; the first 32 distinct URLs link",
        [
            post("x:links", "a post that shares many links", urls=[f"https://e.example/{i}" for i in range(5000)],
                 mentions=[f"user{i}" for i in range(5000)]),
            post("bluesky:links", "another post about something else entirely", minute=1, urls=["https://e.example/0"]),
        ],
        {"posts": 2, "dead_letters": {}, "parents": {"bluesky:links": "x:links shared_url"}},
    )
    yield (
        "control_characters",
        "control characters inside words are dropped before fingerprinting: the copy still links",
        [post("x:ctl", CLAIM), post("bluesky:ctl", CLAIM.replace("secretly", "se\u0001cre\u007ftly").replace("safety", "saf\u0000ety"), minute=1)],
        {"posts": 2, "dead_letters": {}, "parents": {"bluesky:ctl": "x:ctl near_duplicate"}},
    )
    yield (
        "invisible_characters",
        "zero-width characters and bidirectional overrides are dropped before fingerprinting: the copy still links",
        [
            post("x:zw", CLAIM_2),
            post("bluesky:zw", "\u202e" + CLAIM_2.replace("e", "e\u200b").replace("a", "a\u2060") + "\u202c\ufeff", minute=1),
        ],
        {"posts": 2, "dead_letters": {}, "parents": {"bluesky:zw": "x:zw near_duplicate"}},
    )
    yield (
        "homoglyphs",
        "Cyrillic and Greek look-alikes inside Latin words read as Latin: the copy still links",
        [post("x:hg", CLAIM_3), post("bluesky:hg", CLAIM_3.replace("a", "\u0430").replace("e", "\u0435").replace("o", "\u03bf"), minute=1)],
        {"posts": 2, "dead_letters": {}, "parents": {"bluesky:hg": "x:hg near_duplicate"}},
    )
    yield (
        "mixed_scripts",
        "texts mixing Latin, Cyrillic, Arabic, Devanagari and CJK are processed",
        [post("x:mix", "Breaking: Москва сегодня، القاهرة اليوم, दिल्ली आज, 东京今天 — all at once")],
        {"posts": 1, "dead_letters": {}},
    )
    yield (
        "emoji_only",
        "emoji-only texts are processed and never linked by similarity (nothing to fingerprint)",
        [post("x:emoji", "🔥🔥🔥💯🚨"), post("bluesky:emoji", "🔥🔥🔥💯🚨", minute=1)],
        {"posts": 2, "dead_letters": {}, "parents": {"bluesky:emoji": None}},
    )
    yield (
        "timestamps",
        "created_at before 1990 or past the accepted future (replay: 2100) is timestamp_out_of_range; a 1990 post is processed (late)",
        [
            post("x:old", "from the distant past", created_at="1989-12-31T23:59:59Z"),
            post("x:far", "from the far future", created_at="2150-01-01T00:00:00Z"),
            post("x:max", "the last representable second", created_at="9999-12-31T23:59:59Z"),
            post("x:1990", "from 1990, still accepted", created_at="1990-01-02T00:00:00Z"),
            post("x:bad", "not a date", created_at="yesterday"),
        ],
        {"posts": 1, "dead_letters": {"timestamp_out_of_range": 3, "invalid_field": 1}},
    )
    yield (
        "duplicate_ids",
        "an id seen before is a duplicate whatever its content: the first wins, the second is counted",
        [post("x:dup", "the first version of this post"), post("x:dup", "a different text under the same id", minute=1)],
        {"posts": 1, "dead_letters": {}, "duplicates": 1},
    )
    yield (
        "same_id_two_platforms",
        "ids are global (platforms prefix theirs): the same id on two platforms is a duplicate",
        [post("shared:1", "posted on x", platform="x"), post("shared:1", "posted on bluesky", minute=1, platform="bluesky")],
        {"posts": 1, "dead_letters": {}, "duplicates": 1},
    )
    yield (
        "unknown_parent",
        "a repost of a post never seen links to it as a placeholder, which the post fills if it comes",
        [post("x:r1", "", repost_of="x:missing"), post("x:r2", "a reply to another unknown post", minute=1, reply_to="x:gone")],
        {"posts": 2, "dead_letters": {}, "parents": {"x:r1": "x:missing repost", "x:r2": "x:gone reply"}},
    )
    yield (
        "self_reference",
        "a post that reposts, quotes or replies to itself is dead-lettered as invalid_field",
        [post("x:self", "", repost_of="x:self"), post("x:self2", "quoting myself", quote_of="x:self2")],
        {"posts": 0, "dead_letters": {"invalid_field": 2}},
    )
    yield (
        "reference_cycle",
        "a repost of a repost of itself: both are processed, the later one becomes the child, no loop",
        [post("x:c1", "", repost_of="x:c2"), post("x:c2", "", minute=1, repost_of="x:c1"),
         post("x:c3", "", minute=2, repost_of="x:c3b"), post("x:c3b", "", minute=3, repost_of="x:c3")],
        {"posts": 4, "dead_letters": {}},
    )


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    small = "--small" in sys.argv
    if len(args) != 1:
        sys.exit(__doc__)
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name, rule, lines, expect in cases(small):
        (out / f"{name}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        expect.setdefault("duplicates", 0)
        expect.setdefault("parents", {})
        index.append({"case": name, "rule": rule, "expect": expect})
    (out / "cases.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
