#!/usr/bin/env python3
"""Publishes N events to a Herald (one webhook destination of tenant t1 already set up) at a
fixed rate, or as fast as THREADS keep-alive connections can, then waits until the receiver's
nginx stub_status has counted them all delivered.

Usage: publish.py HERALD_PORT API_KEY N RATE THREADS STATUS_URL   (RATE 0 = as fast as possible)
"""
import http.client
import json
import sys
import threading
import time
import urllib.request

port, key, n, rate, threads, status = (
    int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
polls = 0


def delivered():
    """Requests nginx served, without the status reads themselves."""
    global polls
    polls += 1
    text = urllib.request.urlopen(status).read().decode()
    return int(text.split("\n")[2].split()[2]) - polls


# A 64-byte `data` object.
body = json.dumps({"tenant_id": "t1", "topic": "order.paid",
                   "data": {"order": "o-123456", "amount": 4200, "currency": "EUR", "note": "x" * 8}})
start = delivered()
per_thread = n // threads


def worker():
    c = http.client.HTTPConnection("127.0.0.1", port)
    t0 = time.time()
    for i in range(per_thread):
        if rate > 0:
            wait = t0 + i * threads / rate - time.time()
            if wait > 0:
                time.sleep(wait)
        c.request("POST", "/api/v1/publish", body,
                  {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 202:
            print("publish answered", r.status, file=sys.stderr)


t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
published = time.time() - t0
while delivered() - start < per_thread * threads:
    time.sleep(0.05)
print(f"published {per_thread * threads} in {published:.2f} s, all delivered after {time.time() - t0:.2f} s")
