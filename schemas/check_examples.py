#!/usr/bin/env python3
"""Validate the example posts and the demo sample stream against post.v1.

Every file directly in schemas/examples/ must be accepted, every file in
schemas/examples/invalid/ must be rejected, and every line of
services/echotrace/demo/sample.jsonl must be accepted.

"Accepted" means: valid against schemas/post.v1.schema.json (with format
checking on) and also passing the consumer rules that JSON Schema cannot
express (UTF-8 text of at most 256 KiB, created_at between 1990-01-01 and
24 hours after the wall clock).

Requires the `jsonschema` package (pip install jsonschema). Exits non-zero
when any case has the wrong outcome; the last line printed is
"N passed, M failed".
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path

try:
    from jsonschema import Draft202012Validator, FormatChecker
except ImportError:  # pragma: no cover - environment problem, not a test failure
    sys.stderr.write("check_examples.py needs the jsonschema package: pip install jsonschema\n")
    sys.exit(2)

HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "post.v1.schema.json"
EXAMPLES_DIR = HERE / "examples"
INVALID_DIR = EXAMPLES_DIR / "invalid"
SAMPLE_PATH = HERE.parent / "services" / "echotrace" / "demo" / "sample.jsonl"

MAX_TEXT_BYTES = 256 * 1024
EARLIEST = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
FUTURE_SLACK = dt.timedelta(hours=24)

# RFC 3339 date-time: full date, "T" (case-insensitive), full time,
# optional fraction, mandatory offset. Checked here ourselves so the result does
# not depend on which optional format libraries jsonschema happens to find.
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(value: str) -> dt.datetime | None:
    m = RFC3339.fullmatch(value)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    offset = m.group(8)
    if second == 60:  # leap second: accept, clamp for arithmetic
        second = 59
    try:
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        if offset in ("Z", "z"):
            tz = dt.timezone.utc
        else:
            sign = 1 if offset[0] == "+" else -1
            oh, om = int(offset[1:3]), int(offset[4:6])
            if oh > 23 or om > 59:
                return None
            tz = dt.timezone(sign * dt.timedelta(hours=oh, minutes=om))
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None


format_checker = FormatChecker()


@format_checker.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # format only constrains strings
    return parse_rfc3339(value) is not None


def consumer_rule_errors(post: object, now: dt.datetime) -> list[str]:
    """Rules the consumer enforces on top of the schema."""
    errors: list[str] = []
    if not isinstance(post, dict):
        return errors
    text = post.get("text")
    if isinstance(text, str) and len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        errors.append(f"text is {len(text.encode('utf-8'))} bytes, limit {MAX_TEXT_BYTES}")
    created = post.get("created_at")
    if isinstance(created, str):
        ts = parse_rfc3339(created)
        if ts is not None and not (EARLIEST <= ts <= now + FUTURE_SLACK):
            errors.append(f"created_at {created} outside [1990-01-01, now + 24h]")
    return errors


def problems(validator: Draft202012Validator, raw: bytes, now: dt.datetime) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [f"invalid UTF-8: {e}"]
    try:
        post = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"invalid JSON: {e}"]
    found = [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in validator.iter_errors(post)
    ]
    found.extend(consumer_rule_errors(post, now))
    return found


def main() -> int:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=format_checker)
    now = dt.datetime.now(dt.timezone.utc)

    passed = failed = 0

    def record(name: str, expect_valid: bool, found: list[str]) -> None:
        nonlocal passed, failed
        ok = (not found) if expect_valid else bool(found)
        if ok:
            passed += 1
            if not expect_valid:
                print(f"ok   {name} (rejected as expected: {found[0]})")
            return
        failed += 1
        if expect_valid:
            print(f"FAIL {name}: expected valid, got:")
            for p in found:
                print(f"       - {p}")
        else:
            print(f"FAIL {name}: expected invalid, but it was accepted")

    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        found = problems(validator, path.read_bytes(), now)
        record(str(path.relative_to(HERE)), True, found)
        if not found:
            print(f"ok   {path.relative_to(HERE)}")

    for path in sorted(INVALID_DIR.glob("*.json")):
        record(str(path.relative_to(HERE)), False, problems(validator, path.read_bytes(), now))

    if SAMPLE_PATH.is_file():
        sample_ok = sample_bad = 0
        with SAMPLE_PATH.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                found = problems(validator, line, now)
                before = failed
                record(f"sample.jsonl:{lineno}", True, found)
                if failed == before:
                    sample_ok += 1
                else:
                    sample_bad += 1
        print(f"ok   sample.jsonl: {sample_ok} lines valid, {sample_bad} invalid")
    else:
        failed += 1
        print(f"FAIL {SAMPLE_PATH} is missing (run services/echotrace/demo/generate_sample.py)")

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
