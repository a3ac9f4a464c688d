#!/usr/bin/env bash
# Asserts where alertmanager.yml routes example alerts, with `amtool config routes test`:
# the three amplification rules, every health alert of deploy/prometheus/alert-rules.yml (read
# from the file, by its severity label), and alerts with no or an unknown severity.
# Exits non-zero if any label set reaches another receiver than expected.
#
# Usage: deploy/alertmanager/test-routes.sh [alertmanager.yml]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="${1:-$here/alertmanager.yml}"
alert_rules="$here/../prometheus/alert-rules.yml"

if ! command -v amtool >/dev/null; then
    echo "amtool not found: apt-get install prometheus-alertmanager" >&2
    exit 2
fi

passed=0
failed=0

# expect RECEIVER LABEL=VALUE...
expect() {
    local want="$1"
    shift
    local got
    got="$(amtool config routes test --config.file="$config" "$@" 2>/dev/null)"
    if [[ "$got" == "$want" ]]; then
        echo "ok    $* -> $want"
        passed=$((passed + 1))
    else
        echo "FAIL  $* -> ${got:-<nothing>}, expected $want"
        failed=$((failed + 1))
    fi
}

receiver_for() {
    case "$1" in
        critical) echo oncall-pager ;;
        warning) echo oncall-ticket ;;
        info) echo ts-dashboard-feed ;;
        *) echo oncall-ticket ;;
    esac
}

# Amplification alerts, as echotrace pushes them.
expect oncall-pager alertname=amplification_campaign severity=critical cascade_id=c-1 service=echotrace
expect oncall-ticket alertname=coordinated_copying severity=warning cascade_id=c-1 service=echotrace
expect ts-dashboard-feed alertname=cross_platform_spread severity=info cascade_id=c-1 service=echotrace
expect oncall-ticket alertname=recursive_summarisation severity=warning cascade_id=c-1 service=echotrace

# Health alerts, each with the severity its rule gives it.
rules=0
while read -r name severity; do
    rules=$((rules + 1))
    if [[ -z "$severity" ]]; then
        echo "FAIL  $name has no severity label in $alert_rules"
        failed=$((failed + 1))
        continue
    fi
    expect "$(receiver_for "$severity")" alertname="$name" severity="$severity" \
        job=echotrace instance=127.0.0.1:9464 service=echotrace
done < <(awk '
    /^ *- alert:/ { if (name != "") print name, severity; name = $3; severity = "" }
    /^ *severity:/ { if (name != "") severity = $2 }
    END { if (name != "") print name, severity }
' "$alert_rules")
if [[ $rules -lt 5 ]]; then
    echo "FAIL  found $rules alerts in $alert_rules, expected at least 5"
    failed=$((failed + 1))
fi

# No severity or an unknown one: a ticket, not silence.
expect oncall-ticket alertname=SomethingElse
expect oncall-ticket alertname=SomethingElse severity=page

echo "routes: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
