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
  portfree PORT [ADDR]  exit 0 if ADDR:PORT (default 127.0.0.1) can be bound
                        (SO_REUSEADDR)
  memread PID LABEL PHASE
      One memory reading of a running process: VmRSS, RssAnon, RssFile,
      RssShmem (/proc/PID/status), the smaps_rollup totals, and Rss and
      Anonymous per kind of mapping from /proc/PID/smaps (the executable's
      text, read-only segments, RELRO and data+bss, located with its ELF
      program headers; heap; malloc arenas; stacks; shared libraries; the
      rest), with LABEL, PHASE and the load average. One JSON line.
  slow PORT CONNECTIONS HOLD
      Opens CONNECTIONS connections to 127.0.0.1:PORT, each sending a
      request line and a header but never the end of the head (raising
      this process's RLIMIT_NOFILE to fit); once all are open, times one
      fresh GET /v1/metadata; then waits (up to HOLD s) until the server
      has closed every one. Prints when each step ended.
  burst SOCK TASKS CONCURRENCY TIMEOUT IMAGE_A IMAGE_B
      Submits TASKS tasks of two containers (IMAGE_A, IMAGE_B) over the
      control socket, CONCURRENCY at a time, then waits (up to TIMEOUT s)
      until the agent has removed every one: polls /v1/tasks?taskarn= for
      a sample of them (every 500th and the last) once a second, then
      checks that /v1/tasks is empty (the whole list is never fetched while
      it is long: that response would add to the agent's memory).
  footprint READINGS LABEL [LABEL...]
      Markdown tables from memread's lines in READINGS: medians [min-max]
      of the PHASE "run" readings per LABEL, where the RSS goes (per kind
      of mapping), and the "idle-start" -> "idle-end" readings (text).
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


def cmd_portfree(port, addr="127.0.0.1"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, int(port)))
    except OSError as e:
        sys.stderr.write("%s:%s: %s\n" % (addr, port, e))
        return 1
    finally:
        s.close()
    return 0


# --- footprint -----------------------------------------------------------------

PT_LOAD = 1
PT_GNU_RELRO = 0x6474E552

# Kinds of mapping, in table order, with their row titles.
KINDS = [
    ("bin-text", "executable: text (r-xp)"),
    ("bin-ro", "executable: read-only segments (r--p outside RELRO: headers, .rodata, .eh_frame, relocations)"),
    ("bin-relro", "executable: RELRO (written by start-up's relocations, then read-only)"),
    ("bin-data", "executable: .data + .bss (rw-p, and the anonymous mapping right after it)"),
    ("heap", "heap ([heap], brk)"),
    ("arenas", "malloc thread arenas (anonymous rw-p followed by its ---p reserve)"),
    ("stacks", "stacks ([stack]; thread and signal stacks: anonymous rw-p after a one-page ---p guard)"),
    ("anon-other", "other anonymous mappings"),
    ("libs", "shared libraries, summed"),
    ("files", "other mapped files (SQLite's -shm)"),
    ("special", "[vdso], [vvar], [vsyscall]"),
]


def elf_layout(path):
    """(vaddr of file offset 0, RELRO (vaddr, memsz) or None) of a 64-bit
    little-endian ELF file, from its program headers; None if not one."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    base = relro = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, _filesz, p_memsz, _align = \
            struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
        if p_type == PT_LOAD and base is None:
            base = p_vaddr - p_offset
        elif p_type == PT_GNU_RELRO:
            relro = (p_vaddr, p_memsz)
    return (base or 0), relro


def smaps_entries(pid):
    header = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \S+ *(.*)$")
    entries = []
    cur = None
    for line in open("/proc/%s/smaps" % pid):
        m = header.match(line)
        if m:
            cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16), "perms": m.group(3),
                   "offset": int(m.group(4), 16), "path": m.group(5).strip(), "Rss": 0, "Anonymous": 0}
            entries.append(cur)
            continue
        key, _, value = line.partition(":")
        if cur is not None and key in ("Rss", "Anonymous"):
            cur[key] = int(value.split()[0])
    return entries


def classify(pid, entries):
    """kind per entry (same order), and the shared libraries' names."""
    page = os.sysconf("SC_PAGE_SIZE")
    exe = os.readlink("/proc/%s/exe" % pid)
    exe_path = exe[:-len(" (deleted)")] if exe.endswith(" (deleted)") else exe
    relro_range = None
    layout = elf_layout("/proc/%s/exe" % pid)
    mapped0 = [e for e in entries if e["path"] in (exe, exe_path) and e["offset"] == 0]
    if layout and layout[1] and mapped0:
        bias = mapped0[0]["start"] - (layout[0] & ~(page - 1))
        start = bias + layout[1][0]
        # The loader makes whole pages read-only: round the end down.
        relro_range = (start & ~(page - 1), (start + layout[1][1]) & ~(page - 1))
    kinds = []
    libs = set()
    for i, e in enumerate(entries):
        path, perms = e["path"], e["perms"]
        prev = entries[i - 1] if i > 0 else None
        nxt = entries[i + 1] if i + 1 < len(entries) else None
        if path in (exe, exe_path):
            if relro_range and e["start"] < relro_range[1] and e["end"] > relro_range[0] and "x" not in perms:
                k = "bin-relro"
            elif "x" in perms:
                k = "bin-text"
            elif perms[1] == "w":
                k = "bin-data"
            else:
                k = "bin-ro"
        elif path == "[heap]":
            k = "heap"
        elif path == "[stack]":
            k = "stacks"
        elif path.startswith("["):
            k = "special"
        elif path:
            name = os.path.basename(path)
            if ".so" in name:
                k = "libs"
                libs.add(name)
            else:
                k = "files"
        elif prev and prev["end"] == e["start"] and prev["path"] and not prev["path"].startswith("[") \
                and prev["perms"][1] == "w" and prev["perms"][3] == "p" and perms[1] == "w":
            # .bss beyond the file's last page: belongs to that file.
            k = kinds[-1]
        elif perms[:2] == "rw" and prev and prev["end"] == e["start"] and not prev["path"] \
                and prev["perms"] == "---p" and prev["end"] - prev["start"] == page:
            k = "stacks"
        elif perms[:2] == "rw" and nxt and nxt["start"] == e["end"] and not nxt["path"] and nxt["perms"] == "---p" \
                and nxt["end"] - nxt["start"] > page:
            k = "arenas"
        else:
            k = "anon-other"
        kinds.append(k)
    return kinds, sorted(libs)


def cmd_memread(pid, label, phase):
    status = {}
    for line in open("/proc/%s/status" % pid):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            status[key] = int(value.split()[0])
    rollup = {}
    for line in open("/proc/%s/smaps_rollup" % pid):
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Anonymous"):
            rollup[key] = int(value.split()[0])
    entries = smaps_entries(pid)
    kinds, libs = classify(pid, entries)
    per_kind = {k: [0, 0] for k, _ in KINDS}
    for e, k in zip(entries, kinds):
        per_kind[k][0] += e["Rss"]
        per_kind[k][1] += e["Anonymous"]
    print(json.dumps({
        "label": label, "phase": phase, "pid": int(pid), "time": time.time(),
        "status": status, "rollup": rollup, "kinds": per_kind, "libs": libs,
        "load": open("/proc/loadavg").read().split()[:3],
    }))
    return 0


def kib(v):
    if v == int(v):
        return "{:,}".format(int(v))
    return "{:,.1f}".format(v)


def spread(values):
    return "%s [%s–%s]" % (kib(statistics.median(values)), kib(min(values)), kib(max(values)))


def cmd_footprint(readings, *labels):
    rows = [json.loads(line) for line in open(readings) if line.strip()]
    runs = {lab: [r for r in rows if r["label"] == lab and r["phase"] == "run"] for lab in labels}
    two = len(labels) == 2
    figures = [
        ("VmRSS", "status", "VmRSS (/proc/PID/status)"),
        ("RssFile", "status", "of which RssFile (pages of mapped files)"),
        ("RssAnon", "status", "of which RssAnon"),
        ("Pss", "rollup", "Pss (smaps_rollup)"),
        ("Private_Dirty", "rollup", "Private_Dirty (smaps_rollup)"),
    ]
    n = {lab: len(runs[lab]) for lab in labels}
    print("| idle `pullauth serve`, 2 s after ready, KiB: median [min–max] | %s |%s"
          % (" | ".join("%s (%d runs)" % (lab, n[lab]) for lab in labels),
             " %s − %s, medians |" % (labels[1], labels[0]) if two else ""))
    print("|---|%s%s" % ("---|" * len(labels), "---|" if two else ""))
    for key, src, title in figures:
        cells = [spread([r[src][key] for r in runs[lab]]) for lab in labels]
        diff = ""
        if two:
            a = statistics.median([r[src][key] for r in runs[labels[0]]])
            b = statistics.median([r[src][key] for r in runs[labels[1]]])
            diff = " {:+,} |".format(int(b - a)) if b - a == int(b - a) else " {:+,.1f} |".format(b - a)
        print("| %s | %s |%s" % (title, " | ".join(cells), diff))
    print()
    print("| where the RSS goes (/proc/PID/smaps), KiB: median Rss (of which Anonymous) | %s |"
          % " | ".join(labels))
    print("|---|%s" % ("---|" * len(labels)))
    libs = sorted({name for lab in labels for r in runs[lab] for name in r["libs"]})
    for k, title in KINDS:
        if k == "libs":
            title += " (%s)" % (", ".join(libs) if libs else "none: static")
        cells = []
        for lab in labels:
            rss = statistics.median([r["kinds"][k][0] for r in runs[lab]])
            anon = statistics.median([r["kinds"][k][1] for r in runs[lab]])
            cells.append("%s (%s)" % (kib(rss), kib(anon)))
        print("| %s | %s |" % (title, " | ".join(cells)))
    cells = []
    for lab in labels:
        total = statistics.median([sum(v[0] for v in r["kinds"].values()) for r in runs[lab]])
        anon = statistics.median([sum(v[1] for v in r["kinds"].values()) for r in runs[lab]])
        cells.append("%s (%s)" % (kib(total), kib(anon)))
    print("| total (= smaps_rollup Rss) | %s |" % " | ".join(cells))
    print()
    start = {r["label"]: r for r in rows if r["phase"] == "idle-start"}
    end = {r["label"]: r for r in rows if r["phase"] == "idle-end"}
    if start and end:
        secs = {lab: end[lab]["time"] - start[lab]["time"] + 2 for lab in labels if lab in start and lab in end}
        print("| side by side, idle, KiB | RssAnon at 2 s | RssAnon at end | RssAnon grew by | VmRSS at 2 s | VmRSS at end | end (s after ready) |")
        print("|---|---|---|---|---|---|---|")
        for lab in labels:
            if lab not in secs:
                continue
            a0, a1 = start[lab]["status"]["RssAnon"], end[lab]["status"]["RssAnon"]
            v0, v1 = start[lab]["status"]["VmRSS"], end[lab]["status"]["VmRSS"]
            print("| %s | %s | %s | %s | %s | %s | %.0f |"
                  % (lab, kib(a0), kib(a1), "{:+,}".format(a1 - a0), kib(v0), kib(v1), secs[lab]))
    return 0


# --- bursts --------------------------------------------------------------------

HALF_HEAD = b"GET /v1/metadata HTTP/1.1\r\nHost: pullauth\r\n"


def cmd_slow(port, connections, hold):
    import resource
    import selectors
    port, connections, hold = int(port), int(connections), float(hold)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    started = time.monotonic()
    socks, errors = [], 0
    for _ in range(connections):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_HEAD)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            errors += 1
            s.close()
    opened = time.monotonic()
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v1/metadata")
        fresh_status = conn.getresponse().status
        conn.close()
    except OSError as e:
        fresh_status = str(e)
    fresh_ms = (time.monotonic() - t0) * 1000
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_left, answered = len(socks), 0
    deadline = time.monotonic() + hold
    while open_left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                answered += 1  # e.g. a 408; counted, then treated as closed
            sel.unregister(s)
            s.close()
            open_left -= 1
    closed = time.monotonic()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    print(json.dumps({
        "connections": connections,
        "opened": len(socks),
        "connect_errors": errors,
        "open_seconds": opened - started,
        "fresh_status": fresh_status,
        "fresh_ms": fresh_ms,
        "answered_with_data": answered,
        "still_open_at_end": open_left,
        "all_closed_seconds": closed - started,
    }))
    return 0


def post_task2(sock, index, image_a, image_b):
    body = json.dumps({
        "family": "burst-%d" % index,
        "containerDefinitions": [{"name": "a", "image": image_a},
                                 {"name": "b", "image": image_b}],
    })
    err = None
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
        except OSError as e:
            err = str(e)
            time.sleep(0.05 * (attempt + 1))
    return None, err


def task_known(sock, arn):
    from urllib.parse import quote
    conn = UnixHTTPConnection(sock, timeout=10)
    conn.request("GET", "/v1/tasks?taskarn=" + quote(arn, safe=""))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status == 200


def cmd_burst(sock, tasks, concurrency, timeout, image_a, image_b):
    tasks, concurrency, timeout = int(tasks), int(concurrency), float(timeout)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda i: post_task2(sock, i, image_a, image_b), range(tasks)))
    submitted = time.monotonic()
    arns = [arn for arn, _ in results if arn]
    errors = [err for _, err in results if err]
    sample = arns[::500] + arns[-1:]
    emptied = None
    left = len(arns)
    while time.monotonic() - submitted < timeout:
        sample = [arn for arn in sample if task_known(sock, arn)]
        if not sample:
            left = len(all_tasks(sock))
            if left == 0:
                emptied = time.monotonic()
                break
            time.sleep(2)
            continue
        time.sleep(1)
    print(json.dumps({
        "tasks": tasks,
        "accepted": len(arns),
        "submit_errors": errors[:5],
        "submit_error_count": len(errors),
        "submit_seconds": submitted - started,
        "emptied": emptied is not None,
        "empty_after_submit_seconds": (emptied - submitted) if emptied else None,
        "tasks_left": 0 if emptied else left,
        "wall_seconds": (emptied or time.monotonic()) - started,
    }))
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
    "memread": cmd_memread,
    "footprint": cmd_footprint,
    "slow": cmd_slow,
    "burst": cmd_burst,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]) or 0)
