#!/usr/bin/env python3
"""Static checks of the Grafana dashboards in this folder (standard library and promtool only).

For every dashboards/*.json:
- it parses, has a uid and a title, and panel ids are unique;
- panels do not overlap on the grid and fit its 24 columns;
- every panel and every query uses the Prometheus datasource with the fixed uid "prometheus", and
  nothing refers to a template variable (no `${DS}`, `$instance`, `$__rate_interval`): the queries
  are run as they are by services/echotrace/tests/alerting_e2e.rs;
- every query expression is valid PromQL: they are written as recording rules into a temporary
  file and checked with `promtool check rules`.

The provisioning files must name the datasource uid and the dashboards folder.

Usage: dashboards/check.py    (exit status 0 when everything holds)
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASOURCE_UID = "prometheus"

problems = []


def problem(message):
    problems.append(message)
    print(f"FAIL  {message}")


def yaml_string(text):
    # JSON strings are valid YAML double-quoted scalars.
    return json.dumps(text)


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        # Collapsed rows keep their panels inside.
        yield from panel.get("panels", [])


def check_dashboard(path, exprs):
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problem(f"{path.name}: not JSON: {err}")
        return 0
    name = path.name
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dashboard:
            problem(f"{name}: no {key}")
    if dashboard.get("templating", {}).get("list"):
        problem(f"{name}: has template variables; queries must run as they are")
    if "${" in path.read_text():
        problem(f"{name}: refers to a variable with ${{...}}")

    ids = set()
    boxes = []
    queries = 0
    for panel in panels_of(dashboard):
        title = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            problem(f"{title}: duplicate id")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problem(f"{title}: no gridPos x, y, w, h")
        else:
            if grid["x"] < 0 or grid["x"] + grid["w"] > 24:
                problem(f"{title}: beyond the 24 columns")
            for other_title, other in boxes:
                if (grid["x"] < other["x"] + other["w"] and other["x"] < grid["x"] + grid["w"]
                        and grid["y"] < other["y"] + other["h"] and other["y"] < grid["y"] + grid["h"]):
                    problem(f"{title}: overlaps {other_title}")
            boxes.append((title, grid))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID:
            problem(f"{title}: datasource is not uid {DATASOURCE_UID!r}")
        targets = panel.get("targets", [])
        if not targets:
            problem(f"{title}: no queries")
        for target in targets:
            ref = target.get("refId", "?")
            if target.get("datasource", {}).get("uid", DATASOURCE_UID) != DATASOURCE_UID:
                problem(f"{title} {ref}: datasource is not uid {DATASOURCE_UID!r}")
            expr = target.get("expr", "")
            if not expr.strip():
                problem(f"{title} {ref}: no expr")
                continue
            if "$" in expr:
                problem(f"{title} {ref}: expr uses a variable: {expr}")
                continue
            exprs.append((f"{title} {ref}", expr))
            queries += 1
    print(f"ok    {name}: {len(ids)} panels, {queries} queries, datasource uid {DATASOURCE_UID!r}, no overlaps")
    return queries


def check_exprs(exprs):
    promtool = shutil.which("promtool")
    if not promtool:
        problem("promtool not found (apt-get install prometheus)")
        return
    lines = ["groups:"]
    for i, (where, expr) in enumerate(exprs):
        lines.append(f"  - name: {yaml_string(where)}")
        lines.append("    rules:")
        lines.append(f"      - record: dashboard:query:{i}")
        lines.append(f"        expr: {yaml_string(expr)}")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="dashboard-queries-") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        result = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    if result.returncode != 0:
        problem(f"promtool rejects dashboard queries:\n{result.stdout}{result.stderr}")
    else:
        print(f"ok    promtool check rules: {len(exprs)} dashboard queries are valid PromQL")


def check_provisioning():
    datasources = HERE / "provisioning" / "datasources.yml"
    dashboards = HERE / "provisioning" / "dashboards.yml"
    for path, needles in [
        (datasources, [f"uid: {DATASOURCE_UID}", "type: prometheus", "url: http://127.0.0.1:9090"]),
        (dashboards, ["providers:", "type: file", "path:"]),
    ]:
        try:
            text = path.read_text()
        except OSError as err:
            problem(f"{path.relative_to(HERE)}: {err}")
            continue
        missing = [n for n in needles if not re.search(r"^\s*-?\s*" + re.escape(n), text, re.M)]
        if missing:
            problem(f"{path.relative_to(HERE)}: missing {missing}")
        else:
            print(f"ok    {path.relative_to(HERE)}")


def main():
    exprs = []
    files = sorted(HERE.glob("*.json"))
    if not files:
        problem(f"no dashboards in {HERE}")
    for path in files:
        check_dashboard(path, exprs)
    if exprs:
        check_exprs(exprs)
    check_provisioning()
    print(f"dashboards: {'0 problems' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
