#!/usr/bin/env python3
"""Runs a real Alertmanager with alertmanager.yml and checks what routes cannot show.

amtool checks where a label set is routed (test-routes.sh); this checks, with the binary itself:

- inhibition: a firing amplification_campaign on a cascade inhibits coordinated_copying and
  cross_platform_spread on the same cascade only, and EchotraceDown inhibits the other Echotrace*
  alerts of the same instance only (GET /api/v2/alerts, status.inhibitedBy);
- delivery: a critical alert reaches the pager webhook within 5 s of being pushed (group_wait 2 s),
  the info feed gets the alerts that are not inhibited and not the ones that are.

The webhook URLs of the configuration are pointed at a local receiver on a free port; Alertmanager
listens on another free port, without clustering, with its storage in a temporary folder. Only the
standard library is used. Exits non-zero on any failure.

Usage: deploy/alertmanager/test-live.py [alertmanager.yml]
Needs Alertmanager: `prometheus-alertmanager` (Debian) or `alertmanager` on PATH, or the path in
ECHOTRACE_ALERTMANAGER.
"""

import datetime
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLACEHOLDERS = {
    "http://127.0.0.1:9095/page": "/page",
    "http://127.0.0.1:9096/ticket": "/ticket",
    "http://127.0.0.1:9097/feed": "/feed",
}
PAGE_WITHIN_SECS = 5.0

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records every webhook notification: (arrival time, path, payload)."""

    received = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with Receiver.lock:
            Receiver.received.append((time.monotonic(), self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def notified(path):
    """(time, alertname, cascade_id or instance, status) of every alert notified on path."""
    with Receiver.lock:
        out = []
        for at, p, payload in Receiver.received:
            if p == path:
                for alert in payload["alerts"]:
                    labels = alert["labels"]
                    out.append((at, labels["alertname"], labels.get("cascade_id") or labels.get("instance"), alert["status"]))
        return out


def request(url, data=None):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
        return json.loads(body) if body.strip() else None


def main():
    config_path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "alertmanager.yml"
    binary = os.environ.get("ECHOTRACE_ALERTMANAGER") or shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not binary:
        print("Alertmanager not found: apt-get install prometheus-alertmanager, or set ECHOTRACE_ALERTMANAGER", file=sys.stderr)
        return 2

    hook_port = free_port()
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Receiver)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()

    text = config_path.read_text()
    for url, path in PLACEHOLDERS.items():
        if url not in text:
            print(f"FAIL  {config_path} has no receiver URL {url} to redirect", file=sys.stderr)
            return 1
        text = text.replace(url, f"http://127.0.0.1:{hook_port}{path}")

    tmp = Path(tempfile.mkdtemp(prefix="echotrace-am-"))
    (tmp / "alertmanager.yml").write_text(text)
    am_port = free_port()
    base = f"http://127.0.0.1:{am_port}"
    log = open(tmp / "alertmanager.log", "w")
    am = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        return run(base, am, tmp)
    finally:
        am.terminate()
        try:
            am.wait(timeout=10)
        except subprocess.TimeoutExpired:
            am.kill()
            am.wait()
        hooks.shutdown()
        log.close()
        if failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"Alertmanager's log and configuration are in {tmp}")


def run(base, am, tmp):
    deadline = time.monotonic() + 20
    while True:
        if am.poll() is not None:
            print(f"FAIL  Alertmanager exited with {am.returncode}:\n{(tmp / 'alertmanager.log').read_text()}")
            return 1
        try:
            urllib.request.urlopen(f"{base}/-/ready", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                print("FAIL  Alertmanager did not become ready in 20 s")
                return 1
            time.sleep(0.1)

    now = datetime.datetime.now(datetime.timezone.utc)
    ends = (now + datetime.timedelta(minutes=10)).isoformat()

    def alert(name, severity, **labels):
        return {
            "labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": f"{name} test"},
            "startsAt": now.isoformat(),
            "endsAt": ends,
        }

    amp = {"service": "echotrace"}
    health = {"service": "echotrace", "job": "echotrace"}
    alerts = [
        alert("amplification_campaign", "critical", cascade_id="c-1", **amp),
        alert("coordinated_copying", "warning", cascade_id="c-1", **amp),
        alert("cross_platform_spread", "info", cascade_id="c-1", **amp),
        alert("recursive_summarisation", "warning", cascade_id="c-1", **amp),
        alert("coordinated_copying", "warning", cascade_id="c-2", **amp),
        alert("cross_platform_spread", "info", cascade_id="c-3", **amp),
        alert("EchotraceDown", "critical", instance="a:9464", **health),
        alert("EchotraceNoData", "warning", instance="a:9464", **health),
        alert("EchotraceConsumerLagHigh", "warning", instance="a:9464", **health),
        alert("EchotraceConsumerLagHigh", "warning", instance="b:9464", **health),
    ]
    pushed_at = time.monotonic()
    request(f"{base}/api/v2/alerts", alerts)

    expected_inhibited = {
        ("amplification_campaign", "c-1"): False,
        ("coordinated_copying", "c-1"): True,
        ("cross_platform_spread", "c-1"): True,
        ("recursive_summarisation", "c-1"): True,
        ("coordinated_copying", "c-2"): False,
        ("cross_platform_spread", "c-3"): False,
        ("EchotraceDown", "a:9464"): False,
        ("EchotraceNoData", "a:9464"): True,
        ("EchotraceConsumerLagHigh", "a:9464"): True,
        ("EchotraceConsumerLagHigh", "b:9464"): False,
    }
    state = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = {}
        for a in request(f"{base}/api/v2/alerts"):
            labels = a["labels"]
            key = (labels["alertname"], labels.get("cascade_id") or labels.get("instance"))
            state[key] = bool(a["status"]["inhibitedBy"])
        if state == expected_inhibited:
            break
        time.sleep(0.2)
    for key, inhibited in expected_inhibited.items():
        got = state.get(key)
        check(got == inhibited, f"{key[0]} {key[1]}: {'inhibited' if inhibited else 'not inhibited'}" + ("" if got == inhibited else f" (got {'missing' if got is None else ('inhibited' if got else 'not inhibited')})"))

    # The pager: both critical alerts, each within PAGE_WITHIN_SECS of the push.
    deadline = pushed_at + PAGE_WITHIN_SECS + 3
    while time.monotonic() < deadline and len({n[1] for n in notified("/page")}) < 2:
        time.sleep(0.1)
    pages = notified("/page")
    for name, key in [("amplification_campaign", "c-1"), ("EchotraceDown", "a:9464")]:
        at = [t for t, n, k, s in pages if n == name and k == key and s == "firing"]
        delay = at[0] - pushed_at if at else None
        check(delay is not None and delay <= PAGE_WITHIN_SECS, f"{name} {key} paged within {PAGE_WITHIN_SECS:g} s" + (f" ({delay:.1f} s)" if delay is not None else " (not paged)"))
    check({n for _, n, _, _ in pages} == {"amplification_campaign", "EchotraceDown"}, f"the pager got only the critical alerts ({sorted({n for _, n, _, _ in pages})})")

    # The feed: c-3's spread (group_wait 5 s), never the inhibited c-1.
    deadline = pushed_at + 10
    while time.monotonic() < deadline and not notified("/feed"):
        time.sleep(0.1)
    time.sleep(1)
    feed = {(n, k) for _, n, k, _ in notified("/feed")}
    check(("cross_platform_spread", "c-3") in feed, "cross_platform_spread c-3 reached the feed")
    check(("cross_platform_spread", "c-1") not in feed, "inhibited cross_platform_spread c-1 did not reach the feed")

    print(f"live alertmanager: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
