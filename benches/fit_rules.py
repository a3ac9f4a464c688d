#!/usr/bin/env python3
"""Fits the shipped alerting rules on one half of the campaign grid and reports the other half.

    export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
    cargo build -p echotrace-benches --bin campaign-grid
    target/debug/campaign-grid --data ../shared/data --trace /tmp/grid/shipped.trace
    python3 benches/fit_rules.py /tmp/grid/shipped.trace

`campaign-grid --trace` writes the features of every cascade on three platforms or more after each
of its posts: for every background (both halves, as-is and dense, with and without organic bots)
and for every planted campaign. A rule here is a set of `feature >= threshold` (or `<=`)
conditions; it fires on a cascade at the first post whose features meet them all, as the scorer
evaluates a rule with `for_secs = 0`. The scorer also re-evaluates at sweeps, which can only fire
a rule earlier than a post would, so what is fitted here is confirmed by running the grid again
with the rules written into a rules file (`campaign-grid --rules`).

The search, for each kind of alert, on the fit half:
- **page** (critical): the backgrounds as the streams give them (as-is and dense, no organic bots)
  may page at most once per million posts, never on a dense one. Of the rules within that bound,
  the one that misses the fewest campaigns with at least 4 platforms and at least half their
  accounts automated or fresh (a miss: no page within 15 minutes of the first post) wins, then
  the one with the fewest pages on the backgrounds with organic bots (no rule keeps those at
  zero: `benches/README.md` says why), then the one that pages more of the other campaigns, then
  the one with fewest conditions.
- **tickets** (warning), `coordinated_copying` and `recursive_summarisation` searched together:
  the same bound on the backgrounds; then the most campaigns ticketed (or paged by either)
  within 30 minutes, less `FALSE_TICKET_COST` for each ticket on a background with organic bots.
The validation half (the other stories, the other halves of the backgrounds) is then scored with
the chosen rules, and a sensitivity table moves each threshold one step either way.
"""
import argparse
import csv
import itertools
import sys

import numpy as np

PAGE_WITHIN = 15.0
TICKET_WITHIN = 30.0

# Each candidate condition: feature, operator, the thresholds tried (None: no condition).
PAGE_SPACE = [
    ("platforms", ">=", [None, 4]),
    ("platforms_last_hour", ">=", [None, 3, 4]),
    ("automated_authors", ">=", [1, 2, 3]),
    ("automated_author_share", ">=", [0.4, 0.5, 0.6]),
    ("fresh_authors", ">=", [None, 1]),
    ("distinct_authors", ">=", [None, 4, 5]),
    ("posts_per_minute", ">=", [None, 0.2, 0.4]),
]
# The two tickets, searched together: many automated accounts posting copies (coordinated_copying),
# and rounds of summaries by automated accounts (recursive_summarisation).
COPYING_SPACE = [
    ("automated_coordination", ">=", [2, 3, 4]),
    ("coordination", ">=", [None, 4, 6]),
    ("posts_per_minute", ">=", [None, 0.2]),
]
SUMMARISING_SPACE = [
    ("automated_summary_depth", ">=", [2, 3]),
    ("automated_authors", ">=", [None, 2, 3, 4]),
    ("platforms", ">=", [None, 2, 3]),
    ("posts_per_minute", ">=", [None, 0.2]),
]
# A ticket on a background with organic bots costs this many campaigns ticketed.
FALSE_TICKET_COST = 2


class Trace:
    """The trace's rows as columns, and its runs."""

    def __init__(self, path: str):
        with open(path, newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader)
            rows = list(reader)
        columns = list(zip(*rows)) if rows else [[] for _ in header]
        self.run = np.array(columns[header.index("run")])
        self.cascade = np.array(columns[header.index("cascade")])
        self.values = {}
        for name, column in zip(header, columns):
            if name not in ("run", "cascade"):
                self.values[name] = np.array(column, dtype=float)
        self.campaign = self.values["campaign"] == 1
        self.posts = {}
        with open(path.rsplit(".", 1)[0] + ".runs", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                self.posts[row["run"]] = int(row["posts"])
        self.runs = sorted(self.posts)
        # Rows of each run, and one key per (run, cascade) for counting alerts.
        self.rows_of = {run: np.flatnonzero(self.run == run) for run in self.runs}
        keys = np.char.add(np.char.add(self.run, "|"), self.cascade)
        _, self.alert_key = np.unique(keys, return_inverse=True)


def parse(run: str) -> dict:
    parts = run.split(":")
    if parts[0] == "background":
        return {"kind": "background", "half": parts[1], "background": parts[2]}
    return {"kind": "scenario", "half": parts[1], "pace": float(parts[2]), "platforms": int(parts[3]),
            "share": float(parts[4]), "rounds": int(parts[5]), "story": parts[6], "background": parts[7]}


def holds(trace: Trace, rule: list) -> np.ndarray:
    """Rows where every condition of `rule` holds; a list of rules: rows where any of them does."""
    if rule and isinstance(rule[0], list):
        mask = np.zeros(len(trace.run), bool)
        for one in rule:
            mask |= holds(trace, one)
        return mask
    mask = np.ones(len(trace.run), bool)
    for feature, op, threshold in rule:
        if threshold is None:
            continue
        values = trace.values[feature]
        mask &= values >= threshold - 1e-9 if op == ">=" else values <= threshold + 1e-9
    return mask


def evaluate(trace: Trace, rule: list, half: str, within: float) -> dict:
    """Per background of `half`: alerts per million posts; per scenario: minutes to the first alert on
    its campaign (None: never)."""
    mask = holds(trace, rule)
    result = {"backgrounds": {}, "scenarios": {}}
    for run in trace.runs:
        info = parse(run)
        if info["half"] != half:
            continue
        rows = trace.rows_of[run]
        fired = rows[mask[rows]]
        if info["kind"] == "background":
            alerts = len(np.unique(trace.alert_key[fired]))
            result["backgrounds"][info["background"]] = (alerts, alerts * 1e6 / max(trace.posts[run], 1))
        else:
            on_campaign = fired[trace.campaign[fired]]
            first = float(trace.values["minutes"][on_campaign].min()) if len(on_campaign) else None
            result["scenarios"][run] = (info, first)
    return result


def must_page(info: dict) -> bool:
    return info["platforms"] >= 4 and info["share"] >= 0.5


def required_ok(result: dict) -> bool:
    """The target on the backgrounds as the streams give them (no organic bots marked): at most one
    alert per million posts, none on a dense one."""
    return all(rate <= 1.0 and (alerts == 0 or "dense" not in name)
               for name, (alerts, rate) in result["backgrounds"].items() if "bots" not in name)


def bot_alerts(result: dict) -> int:
    """Alerts on the backgrounds with organic bots, which no rule can keep at zero (docs)."""
    return sum(alerts for name, (alerts, _) in result["backgrounds"].items() if "bots" in name)


def page_score(result: dict) -> tuple:
    """(within the bound, -misses, -alerts with organic bots, others paged) for a page rule."""
    misses = sum(1 for info, first in result["scenarios"].values()
                 if must_page(info) and (first is None or first > PAGE_WITHIN))
    others = sum(1 for info, first in result["scenarios"].values() if not must_page(info) and first is not None)
    return required_ok(result), -misses, -bot_alerts(result), others


def ticket_score(result: dict) -> tuple:
    """(within the bound, campaigns ticketed within 30 minutes less the cost of the tickets on the
    backgrounds with organic bots) for the two tickets together."""
    caught = sum(1 for _, first in result["scenarios"].values() if first is not None and first <= TICKET_WITHIN)
    return required_ok(result), caught - FALSE_TICKET_COST * bot_alerts(result)


def describe(rule: list) -> str:
    if rule and isinstance(rule[0], list):
        return " | ".join(describe(one) for one in rule)
    return ", ".join(f"{f} {op} {t:g}" for f, op, t in rule if t is not None) or "(always)"


def summary(result: dict, kind: str) -> str:
    backgrounds = ", ".join(f"{name} {alerts} ({rate:.1f}/M)" for name, (alerts, rate) in sorted(result["backgrounds"].items()))
    scenarios = list(result["scenarios"].values())
    if kind == "page":
        must = [first for info, first in scenarios if must_page(info)]
        paged = sum(1 for first in must if first is not None and first <= PAGE_WITHIN)
        times = sorted(first for first in must if first is not None)
        median = f"{times[len(times) // 2]:.1f}" if times else "-"
        slowest = f"{times[-1]:.1f}" if times else "-"
        others = [first for info, first in scenarios if not must_page(info)]
        return (f"must-page {paged}/{len(must)} within 15 min (median {median}, slowest {slowest} min); "
                f"others paged {sum(f is not None for f in others)}/{len(others)}; backgrounds: {backgrounds}")
    caught = sum(1 for _, first in scenarios if first is not None and first <= TICKET_WITHIN)
    return f"campaigns ticketed within 30 min {caught}/{len(scenarios)}; backgrounds: {backgrounds}"


def rules_of(space: list) -> list:
    return [list(rule) for rule in itertools.product(*[[(f, op, t) for t in ts] for f, op, ts in space])]


def search(trace: Trace, candidates: list, kind: str, within: float):
    best, best_key = None, None
    for rule in candidates:
        result = evaluate(trace, rule, "fit", within)
        score = page_score(result) if kind == "page" else ticket_score(result)
        conditions = sum(1 for one in (rule if isinstance(rule[0], list) else [rule]) for _, _, t in one if t is not None)
        key = (*score, -conditions)
        if best_key is None or key > best_key:
            best, best_key = rule, key
    return best, len(candidates)


def sensitivity(trace: Trace, rules: list, spaces: list, kind: str, within: float) -> None:
    """Each threshold of each rule one step either way (the others as chosen), on validation."""
    print(f"\nsensitivity of the {kind} rules (validation half; each threshold one step either way):")
    for which, (rule, space) in enumerate(zip(rules, spaces)):
        steps = {feature: thresholds for feature, _, thresholds in space}
        for index, (feature, op, threshold) in enumerate(rule):
            values = [t for t in steps[feature] if t is not None]
            if threshold is None or threshold not in values:
                continue
            at = values.index(threshold)
            for moved in values[max(at - 1, 0):at + 2]:
                if moved == threshold:
                    continue
                changed = [list(one) for one in rules]
                changed[which][index] = (feature, op, moved)
                target = changed if len(changed) > 1 else changed[0]
                print(f"  {feature} {op} {moved:g}: {summary(evaluate(trace, target, 'validation', within), kind)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="campaign-grid --trace output (FILE.runs beside it)")
    args = parser.parse_args()
    trace = Trace(args.trace)
    print(f"{len(trace.run)} feature rows, {len(trace.runs)} runs")
    pages = rules_of(PAGE_SPACE)
    tickets = [[copying, summarising] for copying in rules_of(COPYING_SPACE) for summarising in rules_of(SUMMARISING_SPACE)]
    for kind, candidates, spaces, within in (
        ("page", pages, [PAGE_SPACE], PAGE_WITHIN),
        ("ticket", tickets, [COPYING_SPACE, SUMMARISING_SPACE], TICKET_WITHIN),
    ):
        rule, tried = search(trace, candidates, kind, within)
        print(f"\n{kind}: {tried} rules tried; chosen on the fit half: {describe(rule)}")
        print(f"  fit:        {summary(evaluate(trace, rule, 'fit', within), kind)}")
        print(f"  validation: {summary(evaluate(trace, rule, 'validation', within), kind)}")
        sensitivity(trace, rule if kind == "ticket" else [rule], spaces, kind, within)
    return 0


if __name__ == "__main__":
    sys.exit(main())
