#!/usr/bin/env python3
"""Measures re-deciding live grants (docs/performance.md, "Grants:
re-deciding").

    scripts/redecide_bench.py --ledger /tmp/bench.db [--grants 100000] [--event 10000]
    scripts/redecide_bench.py --ledger postgres://postgres@127.0.0.1:55432/bench

It fills a fresh ledger with GRANTS live grants (written straight into the
tables, as `writ serve` would have recorded them), starts `writ serve` on it
(target/release/writ, else target/debug/writ) with a small policy directory,
then:

1. reloads the same rules (a comment changed): every grant re-decided,
   none changed;
2. reloads with a lower TTL cap: every grant narrowed;
3. reloads with a rule that forbids them: every grant revoked;
4. on a fresh set of EVENT live grants of one task, sends one `task_end`
   event and times its answer.

For 1-3 it prints the server's own account of the pass (the stderr line
`re-decided N live grant(s) ... in X ms`) and, from a thread that kept
sending `POST /v1/decide` during the pass, how many decisions were answered
meanwhile and the slowest one.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

POLICY = """
@id("deploy.permit")
permit if action == "deploy"
  grant ["deploy:{resource.id}", "logs:{resource.id}"] for 30m;

@id("revoke.task-end")
require revoke on task_end;
"""
TIGHTER = '\n@id("ttl.tight")\nlimit ttl 5m;\n'
FROZEN = '\n@id("deploy.frozen")\nforbid if action == "deploy" because "deploys are frozen";\n'


def binary():
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "writ")
        if os.path.exists(path):
            return path
    sys.exit("build writ first: cargo build --release")


def request_json(subject, task, now_ms):
    return {
        "subject": {"id": subject, "kind": "ci", "auth": "oidc", "attested": True, "owner": "payments"},
        "action": "deploy",
        "resource": {"id": "k8s://prod-eu/payments", "kind": "cluster", "owner": "payments"},
        "intent": {"task": "deploy", "id": task},
        "environment": {"name": "prod", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ms / 1000))},
        "sensitivity": "confidential",
        "requested": {"scope": ["deploy:k8s://prod-eu/payments", "logs:k8s://prod-eu/payments"], "ttl": 3600},
        "context": {"recent_issuances": 0},
    }


SCOPE = json.dumps(["deploy:k8s://prod-eu/payments", "logs:k8s://prod-eu/payments"], separators=(",", ":"))
OBLIGATIONS = json.dumps([{"kind": "revoke_on", "event": "task_end", "rule": "revoke.task-end"}], separators=(",", ":"))


def rows(prefix, count, task_of, now_ms):
    for i in range(count):
        subject = f"spiffe://bench/{prefix}/{i % 1000}"
        task = task_of(i)
        yield (
            f"{prefix}-{now_ms}-{i:08d}",
            f"d-{i}",
            "sha256:bench",
            subject,
            task,
            json.dumps(request_json(subject, task, now_ms), separators=(",", ":")),
            SCOPE,
            1800,
            now_ms,
            now_ms + 1_800_000,
            OBLIGATIONS,
            f"lease-{i}",
        )


INSERT = (
    "INSERT INTO writ_grants (grant_id, decision_id, policy_digest, subject_id, task_id, request, scope, ttl, "
    "issued_at, expires_at, obligations, credential_ref, narrowed) VALUES ({}, 0)"
)


def fill(ledger, prefix, count, task_of):
    now_ms = int(time.time() * 1000)
    if ledger.startswith("postgres"):
        # COPY through psql: one round trip for the lot.
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as out:
            for row in rows(prefix, count, task_of, now_ms):
                out.write("\t".join(str(v).replace("\\", "\\\\") for v in row) + "\t0\n")
            name = out.name
        columns = "grant_id, decision_id, policy_digest, subject_id, task_id, request, scope, ttl, issued_at, expires_at, obligations, credential_ref, narrowed"
        subprocess.run(
            ["psql", "-q", ledger, "-c", f"\\copy writ_grants ({columns}) FROM '{name}'"],
            check=True,
        )
        os.unlink(name)
    else:
        db = sqlite3.connect(ledger)
        db.executemany(INSERT.format(", ".join("?" * 12)), rows(prefix, count, task_of, now_ms))
        db.commit()
        db.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data


class Decider(threading.Thread):
    """Sends POST /v1/decide one after another until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = False
        self.latencies = []
        self.body = json.dumps(request_json("spiffe://bench/decider", "x", time.time() * 1000))

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop:
            started = time.perf_counter()
            conn.request("POST", "/v1/decide", body=self.body, headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            if reply.status == 200:
                self.latencies.append(time.perf_counter() - started)


def wait_for_pass(stderr_path, seen):
    """Waits for the next `re-decided ...` line on the server's stderr."""
    deadline = time.time() + 600
    while time.time() < deadline:
        with open(stderr_path) as f:
            lines = [l for l in f if "re-decided" in l]
        if len(lines) > seen:
            return lines[seen].strip()
        time.sleep(0.05)
    sys.exit("no re-decision pass was reported within 600 s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--event", type=int, default=10_000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="writ-redecide-")
    writ = binary()
    if args.ledger.startswith("postgres"):
        subprocess.run(["psql", "-q", args.ledger, "-c",
                        "DROP TABLE IF EXISTS writ_grants, writ_subjects, writ_idempotency, writ_migrations, writ_revocations, writ_feed_head"],
                       check=True)
    elif os.path.exists(args.ledger):
        sys.exit(f"{args.ledger} exists; give a new file")
    subprocess.run([writ, "ledger", "migrate", "--ledger", args.ledger], check=True)
    started = time.time()
    fill(args.ledger, "live", args.grants, lambda i: f"run-{i}")
    print(f"filled {args.grants} live grants in {time.time() - started:.1f} s")

    policies = os.path.join(work, "policies")
    os.makedirs(policies)
    policy = os.path.join(policies, "p.writ")
    with open(policy, "w") as f:
        f.write(POLICY)
    port = free_port()
    stderr_path = os.path.join(work, "stderr.txt")
    server = subprocess.Popen(
        [writ, "serve", "--addr", f"127.0.0.1:{port}", "--policy", policies, "--ledger", args.ledger,
         "--reload-settle", "1h"],
        stdout=subprocess.DEVNULL, stderr=open(stderr_path, "w"))
    try:
        for _ in range(200):
            try:
                if call(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        print(f"writ serve: {writ}, ledger {args.ledger}")
        passes = 0
        for name, text in [("unchanged (a comment added)", "// same rules\n" + POLICY),
                           ("narrowing (TTL cap 5m)", POLICY + TIGHTER),
                           ("revoking (deploys forbidden)", POLICY + TIGHTER + FROZEN)]:
            with open(policy, "w") as f:
                f.write(text)
            decider = Decider(port)
            decider.start()
            t0 = time.perf_counter()
            status, body = call(port, "POST", "/v1/policy/reload")
            assert status == 200, body
            line = wait_for_pass(stderr_path, passes)
            wall = time.perf_counter() - t0
            passes += 1
            decider.stop = True
            decider.join()
            lat = sorted(decider.latencies)
            p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
            print(f"reload, {name}: {line}")
            print(f"  reload to pass end {wall:.2f} s; {len(lat)} decisions answered meanwhile, "
                  f"p99 {p99 * 1000:.1f} ms, slowest {lat[-1] * 1000 if lat else float('nan'):.1f} ms")

        fill(args.ledger, "event", args.event, lambda i: "bulk-task")
        t0 = time.perf_counter()
        status, body = call(port, "POST", "/v1/events", {"type": "task_end", "task": "bulk-task"})
        elapsed = time.perf_counter() - t0
        assert status == 200, body
        revoked = len(json.loads(body)["revoked"])
        print(f"one task_end event revoked {revoked} grants in {elapsed * 1000:.0f} ms (answer {len(body)} bytes)")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
