#!/usr/bin/env bash
# Checks the monitoring configuration: Prometheus configuration and rules (promtool), the rules'
# unit tests, the runbook links, Alertmanager's configuration (amtool), its routing, inhibition
# and delivery against a real Alertmanager, and the Grafana dashboards' queries.
#
# Needs promtool and amtool (Debian: apt-get install prometheus prometheus-alertmanager, which
# also provides the Alertmanager binary) and python3. Prints one line per check and a summary
# `N passed, M failed`; exits non-zero when any check fails.
#
# Usage: deploy/prometheus/check.sh      (from anywhere; scripts/test runs it)
set -uo pipefail
cd "$(dirname "$0")/../.."

prom=deploy/prometheus
am=deploy/alertmanager
passed=0
failed=0
failures=()

# run NAME COMMAND...: runs one check, shows its output indented, counts it.
run() {
    local name="$1"
    shift
    echo "== $name"
    local output status
    output="$("$@" 2>&1)"
    status=$?
    [[ -n "$output" ]] && sed 's/^/   /' <<<"$output"
    if [[ $status -eq 0 ]]; then
        echo "ok    $name"
        passed=$((passed + 1))
    else
        echo "FAIL  $name (exit $status)"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

missing=()
for tool in promtool amtool python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "missing: ${missing[*]} (apt-get install prometheus prometheus-alertmanager python3)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

# Every health alert has a summary, a description and a runbook link to an existing section of
# deploy/RUNBOOK.md; every amplification rule of deploy/rules.toml has a section too.
check_runbook() {
    python3 - "$prom/alert-rules.yml" deploy/RUNBOOK.md deploy/rules.toml <<'EOF'
import re, sys
rules_yml, runbook, rules_toml = (open(p).read() for p in sys.argv[1:])
def slug(heading):  # GitHub's heading anchors
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
bad = 0
alerts = re.split(r"^\s*- alert:", rules_yml, flags=re.M)[1:]
for block in alerts:
    name = block.split()[0]
    for key in ("summary", "description", "runbook"):
        if not re.search(rf"^\s*{key}:", block, re.M):
            print(f"{name}: no {key} annotation"); bad += 1
    link = re.search(r'runbook:\s*"?deploy/RUNBOOK\.md#([\w-]+)', block)
    if link and link.group(1) not in anchors:
        print(f"{name}: runbook anchor #{link.group(1)} is not a heading of deploy/RUNBOOK.md"); bad += 1
    elif link:
        print(f"{name} -> deploy/RUNBOOK.md#{link.group(1)}")
for name in re.findall(r'^name\s*=\s*"([^"]+)"', rules_toml, re.M):
    if slug(name) not in anchors:
        print(f"amplification rule {name}: no section in deploy/RUNBOOK.md"); bad += 1
    else:
        print(f"{name} -> deploy/RUNBOOK.md#{slug(name)}")
if not alerts:
    print("no alerts found"); bad += 1
sys.exit(1 if bad else 0)
EOF
}

run "promtool check config $prom/prometheus.yml" promtool check config "$prom/prometheus.yml"
run "promtool check rules (recording, alerts)" promtool check rules "$prom/recording-rules.yml" "$prom/alert-rules.yml"
run "promtool test rules $prom/tests/*.yml" promtool test rules "$prom"/tests/*.yml
run "runbook links" check_runbook
run "amtool check-config $am/alertmanager.yml" amtool check-config "$am/alertmanager.yml"
run "alert routing ($am/test-routes.sh)" "$am/test-routes.sh"
run "inhibition and delivery, real Alertmanager ($am/test-live.py)" python3 "$am/test-live.py"
run "Grafana dashboards (dashboards/check.py)" python3 dashboards/check.py

echo
if [[ $failed -gt 0 ]]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
