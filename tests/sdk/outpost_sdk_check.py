"""Drives a running Herald with the Outpost Python SDK (`outpost-sdk` on PyPI), a client
nobody on the Herald team wrote, to prove wire compatibility.

Usage: python outpost_sdk_check.py <base-url ending in /api/v1> <admin-api-key>
Exits non-zero on the first failed check.
"""

import http.server
import sys
import threading
import time

import standardwebhooks
from outpost_sdk import Outpost

BASE, KEY = sys.argv[1], sys.argv[2]
received = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


client = Outpost(api_key=KEY, server_url=BASE)

tenant = client.tenants.upsert(tenant_id="sdk-tenant", body={"metadata": {"plan": "pro"}})
check("tenant upsert", tenant.id == "sdk-tenant", tenant)
got = client.tenants.get(tenant_id="sdk-tenant")
check("tenant get", got.metadata == {"plan": "pro"}, got)

dest = client.destinations.create(
    tenant_id="sdk-tenant",
    body={"type": "webhook", "topics": ["user.created"], "config": {"url": hook_url}},
)
check("destination create", dest.id and dest.type == "webhook", dest)
secret = dest.credentials.secret
check("secret generated", secret.startswith("whsec_"), secret)

listed = client.destinations.list(tenant_id="sdk-tenant")
check("destination list", [d.id for d in listed] == [dest.id], listed)

one = client.destinations.get(tenant_id="sdk-tenant", destination_id=dest.id)
check("destination get", one.config.url == hook_url, one)

token = client.tenants.get_token(tenant_id="sdk-tenant")
check("tenant token", token.token.count(".") == 2, token)

res = client.publish(
    request={
        "id": "evt_sdk_1",
        "tenant_id": "sdk-tenant",
        "topic": "user.created",
        "metadata": {"source": "sdk"},
        "data": {"user_id": "u_1"},
    }
)
check("publish", res.id == "evt_sdk_1" and res.duplicate is False and res.destination_ids == [dest.id], res)

deadline = time.time() + 20
while not received and time.time() < deadline:
    time.sleep(0.05)
check("webhook received", len(received) == 1, received)
headers, body = received[0]
lower = {k.lower(): v for k, v in headers.items()}
standardwebhooks.Webhook(secret).verify(body, lower)
check("signature verifies with standardwebhooks (python)", True)

attempts = None
deadline = time.time() + 20
while time.time() < deadline:
    attempts = client.attempts.list(request={"tenant_id": "sdk-tenant", "include": ["event.data", "response_data"]})
    if attempts.models:
        break
    time.sleep(0.05)
check("attempts list", len(attempts.models) == 1, attempts)
a = attempts.models[0]
check("attempt fields", a.status == "success" and a.code == "200" and a.attempt_number == 1 and a.event_id == "evt_sdk_1", a)
check("attempt include event.data", a.event is not None and a.event.data == {"user_id": "u_1"}, a.event)

single = client.attempts.get(attempt_id=a.id)
check("attempt get", single.id == a.id, single)
dattempts = client.destinations.list_attempts(request={"tenant_id": "sdk-tenant", "destination_id": dest.id})
check("destination attempts", [x.id for x in dattempts.models] == [a.id], dattempts)

events = client.events.list(request={"tenant_id": "sdk-tenant"})
check("events list", [e.id for e in events.models] == ["evt_sdk_1"], events)
ev = client.events.get(event_id="evt_sdk_1")
check("event get", ev.topic == "user.created" and ev.data == {"user_id": "u_1"}, ev)

dup = client.publish(request={"id": "evt_sdk_1", "tenant_id": "sdk-tenant", "topic": "user.created", "data": {}})
check("publish duplicate", dup.duplicate is True, dup)

retry = client.retry(request={"event_id": "evt_sdk_1", "destination_id": dest.id})
check("retry", retry.success is True, retry)

disabled = client.destinations.disable(tenant_id="sdk-tenant", destination_id=dest.id)
check("disable", disabled.disabled_at is not None, disabled)
enabled = client.destinations.enable(tenant_id="sdk-tenant", destination_id=dest.id)
check("enable", enabled.disabled_at is None, enabled)

updated = client.destinations.update(
    tenant_id="sdk-tenant", destination_id=dest.id, body={"type": "webhook", "topics": ["user.deleted"]}
)
check("update", list(updated.topics) == ["user.deleted"] if not isinstance(updated.topics, str) else False, updated)

schemas = client.schemas.list_destination_types()
check("destination types", any(s.type == "webhook" for s in schemas), schemas)

topics = client.topics.list()
check("topics", isinstance(topics, list), topics)

health = client.health.check()
check("health", health is not None, health)

deleted = client.destinations.delete(tenant_id="sdk-tenant", destination_id=dest.id)
check("destination delete", deleted.success is True, deleted)
gone = client.tenants.delete(tenant_id="sdk-tenant")
check("tenant delete", gone.success is True, gone)

server.shutdown()
print(f"{passed} passed, 0 failed")
