#!/usr/bin/python3
"""Helpers for integration/bench (standard library only).

Subcommands (all print JSON on stdout unless noted):

  proxy LISTEN_SOCK UPSTREAM_SOCK LOG
      A logging pass-through for the engine's Unix socket: every request
      line and X-Registry-Auth header sent through it is appended to LOG.
      Runs until killed. Used once to capture the exact header pullauth
      sends, so the raw curl call can send the same bytes.
  header LOG            the X-Registry-Auth value captured in LOG (text)
  requests LOG          the request lines captured in LOG (text)
  startup PULLAUTH ENVFILE RUNS
      Starts `pullauth serve` RUNS times, each with a fresh ECS_DATADIR,
      and measures process start -> first HTTP 200 on /v1/metadata.
  rss PID               VmRSS and VmHWM of PID in KiB
  submit SOCK CONCURRENCY TIMEOUT IMAGE [IMAGE...]
      Submits one single-container task per IMAGE argument over the control
      socket (CONCURRENCY at a time), then polls until every task is final.
  manifests LOG OFFSET REPO...
      Distinct authenticated manifest requests per repository in the
      registry's JSON log after byte OFFSET.
  metric URL NAME       the value of one Prometheus sample (text)
  taskseq RUNS WARMUP PREPARE IMAGE NAME=SOCK [NAME=SOCK...]
      One task at a time: for each of WARMUP + RUNS rounds, and for each
      agent (the order rotates every round), runs the shell command PREPARE
      (unless it is "-"; not timed), submits a one-container task of IMAGE
      and polls /v1/tasks?taskarn= every 2 ms until it is final. Per agent:
      submit -> the task's PullStoppedAt (the agent's wall-clock timestamp,
      1 ms resolution, so the polling interval does not matter), the submit
      round trip (POST /v1/tasks: credentials + store write), submit ->
      final as seen by polling, and PullStartedAt -> PullStoppedAt.
  portfree PORT         exit 0 if 127.0.0.1:PORT can be bound (SO_REUSEADDR)
"""

import http.client
import json
import os
import re
import shutil
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

FINAL = ("PULLED", "STOPPED")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


# --- proxy -------------------------------------------------------------------

def cmd_proxy(listen, upstream, log_path):
    log = open(log_path, "a", buffering=1)
    lock = threading.Lock()
    request_line = re.compile(rb"^(GET|POST|PUT|HEAD|DELETE) (\S+) HTTP/1\.[01]\r$", re.M)
    auth_header = re.compile(rb"^x-registry-auth: ?(\S*)\r$", re.M | re.I)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(upstream)
            client = self.request

            def pump_back():
                try:
                    while True:
                        data = up.recv(65536)
                        if not data:
                            break
                        client.sendall(data)
                except OSError:
                    pass
                finally:
                    try:
                        client.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

            t = threading.Thread(target=pump_back, daemon=True)
            t.start()
            seen = b""
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    seen += data
                    # Log complete header blocks as they arrive.
                    while b"\r\n\r\n" in seen:
                        head, seen = seen.split(b"\r\n\r\n", 1)
                        head += b"\r\n"
                        with lock:
                            for m in request_line.finditer(head):
                                log.write("REQUEST %s %s\n" % (m.group(1).decode(), m.group(2).decode()))
                            for m in auth_header.finditer(head):
                                log.write("AUTH %s\n" % m.group(1).decode())
                    up.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    up.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                t.join(timeout=30)
                up.close()

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    if os.path.exists(listen):
        os.unlink(listen)
    with Server(listen, Handler) as server:
        server.serve_forever()


def cmd_header(log_path):
    for line in open(log_path):
        if line.startswith("AUTH "):
            print(line.split(" ", 1)[1].strip())
            return 0
    return 1


def cmd_requests(log_path):
    for line in open(log_path):
        if line.startswith("REQUEST "):
            print(line.split(" ", 1)[1].strip())
    return 0


# --- agent start-up ----------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metadata_status(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v1/metadata")
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def cmd_startup(pullauth, env_file, runs):
    times = []
    for _ in range(int(runs)):
        data_dir = tempfile.mkdtemp(prefix="pullauth-bench-start-")
        port = free_port()
        env = dict(os.environ, ECS_DATADIR=data_dir)
        argv = [pullauth, "serve", "--env-file", env_file,
                "--listen", "127.0.0.1:%d" % port,
                "--control-socket", os.path.join(data_dir, "control.sock")]
        stderr = open(os.path.join(data_dir, "agent.log"), "wb")
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        ok = False
        while time.monotonic() - started < 30:
            if metadata_status(port) == 200:
                ok = True
                break
            if proc.poll() is not None:
                break
            time.sleep(0.0005)
        elapsed = time.monotonic() - started
        proc.terminate()
        proc.wait(timeout=30)
        stderr.close()
        if not ok:
            sys.stderr.write(open(os.path.join(data_dir, "agent.log")).read())
            shutil.rmtree(data_dir, ignore_errors=True)
            print(json.dumps({"error": "agent did not answer"}))
            return 1
        shutil.rmtree(data_dir, ignore_errors=True)
        times.append(elapsed * 1000)
    print(json.dumps({
        "runs": len(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "all_ms": [round(t, 2) for t in times],
    }))
    return 0


def cmd_rss(pid):
    out = {}
    for line in open("/proc/%s/status" % pid):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    print(json.dumps(out))
    return 0


# --- tasks -------------------------------------------------------------------

def post_task(sock, index, image):
    body = json.dumps({
        "family": "bench-%d" % index,
        "containerDefinitions": [{"name": "c", "image": image}],
    })
    for attempt in range(5):
        try:
            conn = UnixHTTPConnection(sock)
            conn.request("POST", "/v1/tasks", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if resp.status != 201:
                return None, "HTTP %d: %s" % (resp.status, data[:200].decode(errors="replace"))
            return json.loads(data)["Arn"], None
        except OSError as e:  # e.g. EAGAIN when the listen backlog is full
            err = str(e)
            time.sleep(0.05 * (attempt + 1))
    return None, err


def all_tasks(sock):
    conn = UnixHTTPConnection(sock)
    conn.request("GET", "/v1/tasks")
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return {t["Arn"]: t for t in data["Tasks"]}


def cmd_submit(sock, concurrency, timeout, *images):
    concurrency = int(concurrency)
    timeout = float(timeout)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda a: post_task(sock, a[0], a[1]), enumerate(images)))
    submitted = time.monotonic()
    arns = [arn for arn, _ in results if arn]
    errors = [err for _, err in results if err]
    statuses = {}
    final_at = None
    while time.monotonic() - started < timeout:
        tasks = all_tasks(sock)
        statuses = {}
        for arn in arns:
            status = tasks.get(arn, {}).get("KnownStatus", "MISSING")
            statuses[status] = statuses.get(status, 0) + 1
        if sum(statuses.get(s, 0) for s in FINAL) == len(arns):
            final_at = time.monotonic()
            break
        time.sleep(0.02)
    print(json.dumps({
        "tasks": len(images),
        "accepted": len(arns),
        "submit_errors": errors[:5],
        "submit_error_count": len(errors),
        "submit_seconds": submitted - started,
        "all_final": final_at is not None,
        "wall_seconds": (final_at or time.monotonic()) - started,
        "statuses": statuses,
    }))
    return 0


# --- registry log --------------------------------------------------------------

def cmd_manifests(log_path, offset, *repos):
    with open(log_path, "rb") as f:
        f.seek(int(offset))
        text = f.read()
    # One request logs several lines; the URI and the user may be on
    # different lines, so collect both per request id.
    uri = {}
    user = {}
    for line in text.split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        rid = entry.get("http.request.id")
        if not rid:
            continue
        if "http.request.uri" in entry:
            uri[rid] = entry["http.request.uri"]
        if entry.get("auth.user.name"):
            user[rid] = entry["auth.user.name"]
    counts = {}
    for repo in repos:
        needle = "/v2/%s/manifests/" % repo
        counts[repo] = sum(1 for rid, u in uri.items() if needle in u and rid in user)
    print(json.dumps(counts))
    return 0


def cmd_metric(url, name):
    import urllib.request
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            print(line.rsplit(" ", 1)[1])
            return 0
    print("0")
    return 0


def task_status(sock, arn):
    from urllib.parse import quote
    conn = UnixHTTPConnection(sock, timeout=10)
    conn.request("GET", "/v1/tasks?taskarn=" + quote(arn, safe=""))
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError("GET task %s: HTTP %d" % (arn, resp.status))
    return json.loads(data)


def rfc3339_ms(text):
    from datetime import datetime, timezone
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000


def one_task(sock, family, image, timeout):
    body = json.dumps({"family": family, "containerDefinitions": [{"name": "c", "image": image}]})
    wall_started = time.time()
    started = time.monotonic()
    conn = UnixHTTPConnection(sock, timeout=timeout)
    conn.request("POST", "/v1/tasks", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    submitted = time.monotonic()
    if resp.status != 201:
        raise RuntimeError("POST /v1/tasks: HTTP %d: %s" % (resp.status, data[:300].decode(errors="replace")))
    arn = json.loads(data)["Arn"]
    while True:
        task = task_status(sock, arn)
        if task.get("KnownStatus") in FINAL:
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError("task %s not final after %ss" % (arn, timeout))
        time.sleep(0.002)
    final = time.monotonic()
    container = (task.get("Containers") or [{}])[0]
    agent_pull = to_stop = None
    if task.get("PullStoppedAt"):
        to_stop = rfc3339_ms(task["PullStoppedAt"]) - wall_started * 1000
        if task.get("PullStartedAt"):
            agent_pull = rfc3339_ms(task["PullStoppedAt"]) - rfc3339_ms(task["PullStartedAt"])
    return {
        "submit_ms": (submitted - started) * 1000,
        "total_ms": to_stop,
        "seen_final_ms": (final - started) * 1000,
        "agent_pull_ms": agent_pull,
        "status": task.get("KnownStatus"),
        "source": container.get("RegistryKey"),
        "username": container.get("Username"),
        "error": container.get("PullError"),
    }


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": statistics.mean(values),
        "stddev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def cmd_taskseq(runs, warmup, prepare, image, *agents):
    runs, warmup = int(runs), int(warmup)
    agents = [a.split("=", 1) for a in agents]
    out = {name: {"warmup": [], "runs": []} for name, _ in agents}
    for r in range(warmup + runs):
        k = r % len(agents)
        for name, sock in agents[k:] + agents[:k]:
            if prepare != "-":
                subprocess.run(prepare, shell=True, check=True, timeout=120,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            m = one_task(sock, "bench-%s-%d" % (name, r), image, 120)
            out[name]["warmup" if r < warmup else "runs"].append(m)
    for name in out:
        rs = out[name]["runs"]
        out[name]["total"] = summary([m["total_ms"] for m in rs])
        out[name]["submit"] = summary([m["submit_ms"] for m in rs])
        out[name]["seen_final"] = summary([m["seen_final_ms"] for m in rs])
        out[name]["agent_pull"] = summary([m["agent_pull_ms"] for m in rs])
        statuses = {}
        for m in out[name]["warmup"] + rs:
            statuses[m["status"]] = statuses.get(m["status"], 0) + 1
        out[name]["statuses"] = statuses
        out[name]["sources"] = sorted({str(m["source"]) for m in out[name]["warmup"] + rs})
        out[name]["errors"] = sorted({m["error"] for m in out[name]["warmup"] + rs if m["error"]})[:3]
    print(json.dumps(out))
    return 0


def cmd_portfree(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(port)))
    except OSError as e:
        sys.stderr.write("127.0.0.1:%s: %s\n" % (port, e))
        return 1
    finally:
        s.close()
    return 0


COMMANDS = {
    "proxy": cmd_proxy,
    "header": cmd_header,
    "requests": cmd_requests,
    "startup": cmd_startup,
    "rss": cmd_rss,
    "submit": cmd_submit,
    "manifests": cmd_manifests,
    "metric": cmd_metric,
    "taskseq": cmd_taskseq,
    "portfree": cmd_portfree,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]) or 0)
