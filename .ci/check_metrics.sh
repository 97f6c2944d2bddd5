#!/usr/bin/env bash
# `promtool check metrics` on a real scrape of a running gateway: the embedded
# default (its own redis-server, the console provider) in a temporary
# directory, after a challenge and two verifications so that labelled series
# exist. Any lint message fails. (tests/test_metrics.py does the same for a
# gateway and a standalone worker inside the suite.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${VENV:-$root/.venv}/bin/python"
work="$(mktemp -d)"
port="$("$python" -c 'from gateway.embedded import free_port; print(free_port())')"

cd "$work"
env -u OTPGW_CONFIG -u OTPGW_REDIS_URL OTPGW_PORT="$port" \
    "$python" -m gateway serve > gateway.log 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$python" - "$port" <<'PY'
import json, re, sys, time, urllib.error, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"


def call(method, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


deadline = time.monotonic() + 30
while True:
    try:
        if call("GET", "/healthz")[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the gateway did not start:\n" + open("gateway.log").read())
    time.sleep(0.1)

keys = json.load(open("var/dev-keys.json"))
account = {"account_id": "ci", "establishment": "CI", "last_name": "Check",
           "first_name": "Metrics", "email": "ci@example.org", "role": "user",
           "phone": "06 12 34 56 78"}
assert call("POST", "/accounts", account, keys["operator"])[0] == 201
status, body = call("POST", "/challenge", {"account_id": "ci"}, keys["otp"])
assert status == 202, body
challenge_id = json.loads(body)["challenge_id"]
console = re.compile(r"\[console sms to \+[0-9]+\] \D*([0-9]{6})\b")  # the message's code
while not (found := console.findall(open("gateway.log").read())):
    assert time.monotonic() < deadline, "no code delivered:\n" + open("gateway.log").read()
    time.sleep(0.05)
code = found[-1]
wrong = str((int(code) + 1) % 10**6).zfill(6)
assert call("POST", "/verify", {"challenge_id": challenge_id, "code": wrong}, keys["otp"])[0] == 422
assert call("POST", "/verify", {"challenge_id": challenge_id, "code": code}, keys["otp"])[0] == 200
status, text = call("GET", "/metrics")
assert status == 200
open("metrics.txt", "wb").write(text)
PY

if ! out="$(promtool check metrics < metrics.txt 2>&1)" || [ -n "$out" ]; then
    echo "promtool check metrics failed:"
    echo "$out"
    exit 1
fi
echo "promtool check metrics: OK ($(grep -c '^otp_' metrics.txt) otp_* samples from a live gateway)"
