#!/usr/bin/env python3
"""Checks the one-machine trial (deploy/compose) without running it: no container registry is
reachable from the machines the tests run on, so the images cannot be pulled or built there.

    python3 deploy/compose/check.py        (scripts/test runs it)

1. compose.yaml against the Compose specification's JSON schema (check-jsonschema's vendored copy).
2. Every file a service mounts from the repository exists, and so do the build context, the
   Dockerfile and every path the Dockerfile copies from the context.
3. Prometheus' configuration as the container sees it (its mounts assembled in a temporary
   folder) passes `promtool check config`, rules included.
4. The topics the `topics` service creates are the ones deploy/echotrace.toml names.
5. Grafana's datasource has the uid the shipped dashboard refers to.

Prints one line per check and `N passed, M failed`; exits non-zero when any check fails.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COMPOSE = HERE / "compose.yaml"


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's mounts of repository files."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((HERE / source).resolve(), target))
    return mounts


def check_schema(_compose: dict) -> str | None:
    result = subprocess.run(
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True,
    )
    return None if result.returncode == 0 else result.stdout + result.stderr


def check_files(compose: dict) -> str | None:
    missing = [
        f"{name}: {path}" for name, service in compose["services"].items()
        for path, _ in bind_mounts(service) if not path.exists()
    ]
    build = compose["services"]["echotrace"]["build"]
    context = (HERE / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    if not dockerfile.exists():
        return f"no Dockerfile at {dockerfile}"
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            missing += [f"Dockerfile: {source}" for source in words[1:-1] if not (context / source).exists()]
    return "missing: " + ", ".join(missing) if missing else None


def check_prometheus(compose: dict) -> str | None:
    with tempfile.TemporaryDirectory() as root:
        # A missing file is the previous check's to report; promtool then reports what it lacks.
        for path, target in filter(lambda mount: mount[0].exists(), bind_mounts(compose["services"]["prometheus"])):
            placed = Path(root) / target.lstrip("/")
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, placed)
        flag = next(arg for arg in compose["services"]["prometheus"]["command"] if arg.startswith("--config.file="))
        config = Path(root) / flag.split("=", 1)[1].lstrip("/")
        result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
        return None if result.returncode == 0 else result.stdout + result.stderr


def check_topics(compose: dict) -> str | None:
    script = compose["services"]["topics"]["command"][0]
    created = set(re.findall(r"([a-z.\-]+):\d+", script.split("for spec in", 1)[1].split(";", 1)[0]))
    kafka = tomllib.loads((REPO / "deploy" / "echotrace.toml").read_text())["kafka"]
    wanted = set(kafka["input_topics"]) | {kafka[key] for key in ("dead_letter_topic", "edges_topic", "alerts_topic")}
    wanted.discard("")
    return None if created == wanted else f"creates {sorted(created)}, echotrace.toml names {sorted(wanted)}"


def check_grafana(_compose: dict) -> str | None:
    datasources = YAML(typ="safe").load((HERE / "grafana-datasources.yml").read_text())["datasources"]
    uids = {source["uid"] for source in datasources}
    dashboard = json.loads((REPO / "dashboards" / "echotrace-overview.json").read_text())
    used = set(re.findall(r'"uid":\s*"([^"$]+)"', json.dumps([panel.get("datasource") for panel in dashboard["panels"]])))
    if not used:
        return "found no datasource uid in the dashboard's panels"
    return None if used <= uids else f"the dashboard uses datasources {sorted(used - uids)} the trial does not provision"


def main() -> int:
    compose = YAML(typ="safe").load(COMPOSE.read_text())
    checks = {
        "compose.yaml against the Compose specification": check_schema,
        "mounted and built-from files exist": check_files,
        "promtool check config, as mounted": check_prometheus,
        "topics created are echotrace.toml's": check_topics,
        "Grafana datasource uids cover the dashboard's": check_grafana,
    }
    failed = 0
    for name, check in checks.items():
        problem = check(compose)
        print(f"{'ok  ' if problem is None else 'FAIL'}  {name}")
        if problem:
            failed += 1
            print("      " + problem.strip().replace("\n", "\n      "))
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
