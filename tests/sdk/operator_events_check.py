"""Drives every method of the `operator_events` module of the Outpost Python SDK
(`outpost-sdk==1.7.0` on PyPI) against a running Herald, including an alert whose first
delivery fails and is retried.

Usage: python operator_events_check.py <base-url ending in /api/v1> <admin-api-key>
The Herald under test must run with HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD=2 and a short
retry schedule (one retry after about a second), in development mode (loopback targets).
Exits non-zero on the first failed check.
"""

import http.server
import json
import sys
import threading
import time

import standardwebhooks
from outpost_sdk import Outpost, errors, models

BASE, KEY = sys.argv[1], sys.argv[2]

lock = threading.Lock()
ops_received = []  # (headers, body) of every request to /ops, answered 503 the first time
ops_calls = {"n": 0}


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.startswith("/ops"):
            with lock:
                ops_calls["n"] += 1
                first = ops_calls["n"] == 1
                ops_received.append((dict(self.headers), body, 503 if first else 200))
            self.send_response(503 if first else 200)
        else:
            # The tenant's receiver is down for good.
            self.send_response(500)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
root = f"http://127.0.0.1:{server.server_address[1]}"

passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


def wait(name, pred, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    check(name, False, "timed out")


client = Outpost(api_key=KEY, server_url=BASE)
ops = client.operator_events

# ----- destination types and destinations -----

types = ops.list_destination_types()
kinds = {t.type for t in types}
check("list_destination_types", {"webhook", "email"} <= kinds, kinds)
email_type = next(t for t in types if t.type == "email")
check(
    "email type schema",
    {f.key for f in email_type.config_fields} >= {"to", "from", "smtp_host", "tls"},
    email_type,
)

check("list_destinations (none yet)", ops.list_destinations() == [], ops.list_destinations())

try:
    ops.create_destination(
        request={"type": "webhook", "topics": ["user.created"], "config": {"url": root + "/ops"}}
    )
    check("create_destination refuses a tenant topic", False, "accepted")
except errors.OutpostError as e:
    check("create_destination refuses a tenant topic", e.status_code == 422, e)

dest = ops.create_destination(
    request=models.OperatorEventDestinationCreate(
        type="webhook",
        topics=["alert.destination.consecutive_failure"],
        config={"url": root + "/ops"},
    )
)
check("create_destination (200)", dest.id and dest.type == "webhook", dest)
secret = dest.credentials.secret
check("generated secret returned", secret.startswith("whsec_"), dest.credentials)

got = ops.get_destination(destination_id=dest.id)
check("get_destination", got.id == dest.id and got.topics == ["alert.destination.consecutive_failure"], got)

upd = ops.update_destination(
    destination_id=dest.id,
    body=models.OperatorEventDestinationUpdate(
        topics=["alert.destination.consecutive_failure", "alert.destination.disabled"]
    ),
)
check("update_destination replaces topics", len(upd.topics) == 2, upd.topics)

dis = ops.disable_destination(destination_id=dest.id)
check("disable_destination", dis.disabled_at is not None, dis)
en = ops.enable_destination(destination_id=dest.id)
check("enable_destination", en.disabled_at is None, en)

listed = ops.list_destinations()
check("list_destinations", [d.id for d in listed] == [dest.id], listed)

# ----- a tenant destination that fails twice: level 50, level 100, disabled -----

client.tenants.upsert(tenant_id="ops-tenant")
tdest = client.destinations.create(
    tenant_id="ops-tenant",
    body={"type": "webhook", "topics": ["*"], "config": {"url": root + "/tenant"}},
)
for i in range(2):
    client.publish(
        request={
            "tenant_id": "ops-tenant",
            "topic": "user.created",
            "id": f"ops-e{i}",
            "eligible_for_retry": False,
            "data": {"i": i},
        }
    )


def delivered_topics():
    with lock:
        return [json.loads(b)["topic"] for (_, b, status) in ops_received if status == 200]


topics = wait("three alerts delivered", lambda: (lambda t: t if len(t) >= 3 else None)(delivered_topics()))
check(
    "alert topics",
    sorted(topics)
    == sorted(
        [
            "alert.destination.consecutive_failure",
            "alert.destination.consecutive_failure",
            "alert.destination.disabled",
        ]
    ),
    topics,
)
with lock:
    first_headers, first_body, first_status = ops_received[0]
check("the first alert delivery failed", first_status == 503, first_status)
first_id = json.loads(first_body)["id"]
with lock:
    retried = [b for (_, b, s) in ops_received if s == 200 and json.loads(b)["id"] == first_id]
check("the failed alert was retried and delivered", len(retried) == 1, ops_received)

wh = standardwebhooks.Webhook(secret)
with lock:
    for h, b, _ in ops_received:
        headers = {k.lower(): v for k, v in h.items()}
        wh.verify(b, headers)
check("alerts are signed with the operator destination's secret", True)

disabled_alert = next(
    json.loads(b) for (_, b, s) in ops_received if json.loads(b)["topic"] == "alert.destination.disabled"
)
check(
    "disabled alert names the tenant destination",
    disabled_alert["data"]["destination"]["id"] == tdest.id and disabled_alert["tenant_id"] == "ops-tenant",
    disabled_alert,
)

# ----- events and attempts -----

evs = ops.list_events()
check("list_events", len(evs.models) == 3, evs)
check("list_events newest first", evs.models[0].time >= evs.models[-1].time, [e.time for e in evs.models])
check(
    "events belong to operator destinations",
    all(e.matched_destination_ids == [dest.id] for e in evs.models if e.matched_destination_ids is not None),
    evs,
)
ev = ops.get_event(event_id=first_id)
check("get_event", ev.id == first_id and ev.data["id"] == first_id, ev)

ev_attempts = wait(
    "the retried alert has two attempts",
    lambda: (lambda r: r if len(r.models) == 2 else None)(ops.list_event_attempts(event_id=first_id)),
)
statuses = [a.status for a in ev_attempts.models]
check("list_event_attempts: failed then success", sorted(statuses) == ["failed", "success"], statuses)

failed = ops.list_attempts(request={"status": "failed"})
check("list_attempts status=failed", [a.event_id for a in failed.models] == [first_id], failed)
all_attempts = ops.list_attempts(request={"destination_id": dest.id, "limit": 10})
check("list_attempts by destination", len(all_attempts.models) == 4, all_attempts)
one = ops.get_attempt(attempt_id=failed.models[0].id)
check("get_attempt", one.id == failed.models[0].id and one.code == "503", one)

try:
    ops.get_attempt(attempt_id="atm_nope")
    check("get_attempt 404", False, "found")
except errors.OutpostError as e:
    check("get_attempt 404", e.status_code == 404, e)

# ----- retry -----

before = len(delivered_topics())
res = ops.retry(request=models.OperatorEventRetryRequest(event_id=first_id, destination_id=dest.id))
check("retry (200)", res.success is True, res)
wait("the retried event arrives again", lambda: len(delivered_topics()) > before)
with lock:
    again = [b for (_, b, s) in ops_received if s == 200 and json.loads(b)["id"] == first_id]
check("retry delivered the same event", len(again) == 2, len(again))

# ----- delete -----

ok = ops.delete_destination(destination_id=dest.id)
check("delete_destination", ok.success is True, ok)
try:
    ops.get_destination(destination_id=dest.id)
    check("get_destination after delete is 404", False, "found")
except errors.OutpostError as e:
    check("get_destination after delete is 404", e.status_code == 404, e)

# Operator records never show through the tenant API.
tenant_events = client.events.list(request={})
check(
    "GET /events leaves operator events out",
    all(e.tenant_id == "ops-tenant" for e in tenant_events.models),
    [e.tenant_id for e in tenant_events.models],
)

print(f"{passed} passed, 0 failed")
