"""Helpers shared by the benchmarks in bench/ (ingest, otlp, stitch).

A private PostgreSQL database, the production server (gunicorn ``rumserver.wsgi``)
on a free port, CPU accounting by process, the COPY floor, py-spy summaries and the
JSON results. Nothing here knows about one endpoint: the scripts pass what differs.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = ROOT / ".venv"
RESULTS = BENCH / "results"

PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "llmrum_bench"
PG_BENCH_URL = f"postgres://postgres@127.0.0.1:5432/{PG_BENCH_DB}"
BROKER_URL = "redis://127.0.0.1:6379/15"
HINT_QUEUE = "llmrum"  # CELERY_TASK_DEFAULT_QUEUE: the hints pile up there, nobody consumes


def reexec_in_venv(script: str) -> None:
    """A bench script runs under whatever python3 is on PATH; the project's
    packages (psycopg, gunicorn, Django) live in .venv, so switch to it."""
    if Path(sys.prefix).resolve() != VENV.resolve() and (VENV / "bin" / "python").exists():
        python = str(VENV / "bin" / "python")
        os.execv(python, [python, str(Path(script).resolve()), *sys.argv[1:]])


def terminate_like_ctrl_c(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: the finally blocks run


# --- Tools and processes -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_url(database: str = PG_BENCH_DB) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{database}"


def server_env(
    settings_module: str, limits: dict[str, str], database_url: str = PG_BENCH_URL
) -> dict[str, str]:
    """The server's environment: the bench database (`database_url`, llmrum_bench
    unless a benchmark has its own), Redis db 15, `limits` (the rate limits a
    benchmark raises) and the settings module."""
    # Start from a clean slate: an LLMRUM_* or DJANGO_* variable left in the shell
    # (LLMRUM_DEBUG, say) would change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMRUM_", "DJANGO_"))}
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=BROKER_URL,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECRET_KEY="bench",
        DJANGO_SETTINGS_MODULE=settings_module,
        # bench/ holds settings_bench and noop_urls; a PYTHONPATH of the caller is kept
        # (a --settings module for an A/B trial may live outside the tree).
        PYTHONPATH=os.pathsep.join(
            p for p in [str(ROOT), str(BENCH), os.environ.get("PYTHONPATH")] if p
        ),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(limits)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, log: Path, extra: list[str]
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "rumserver.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        # No --access-logfile: gunicorn's access log is off unless asked for.
        "--error-logfile",
        "-",
        "--graceful-timeout",
        "5",
        *extra,  # later options win: --gunicorn-args "--worker-class gthread --threads 4"
    ]
    # Its own session, so that Ctrl-C in the terminal reaches us and we stop it in
    # order; its output (error log, Python warnings) goes to a file, not the report.
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(
                f"gunicorn exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the group this script started (gunicorn master and its workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


# --- PostgreSQL ----------------------------------------------------------------


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def recreate_database(database: str = PG_BENCH_DB) -> None:
    drop_database(database)
    pg_admin(f"CREATE DATABASE {database}")


def drop_database(database: str = PG_BENCH_DB) -> None:
    pg_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def pg_value(sql: str, database: str = PG_BENCH_DB) -> Any:
    import psycopg

    with psycopg.connect(pg_url(database)) as conn:
        return conn.execute(sql).fetchone()[0]


def drain_hint_queue() -> int:
    """The correlator hints the run sent (nobody consumes db 15): count and delete them."""
    try:
        import redis

        client = redis.Redis.from_url(BROKER_URL)
        queued = int(client.llen(HINT_QUEUE))
        client.delete(HINT_QUEUE)
        return queued
    except Exception as exc:  # cleanup only: never hide the benchmark's own result
        print(f"  (could not clean the hint queue in {BROKER_URL}: {exc})")
        return -1


# --- CPU accounting ------------------------------------------------------------
# gunicorn, PostgreSQL and the load generator share 2 cores: CPU time per request
# by process tells where the time goes better than latency does.


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0  # the process ended between listing and reading
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(master_pid: int, **clients: float) -> dict[str, float]:
    """Wall clock, machine busy time, gunicorn (master + workers), every postgres
    process, and the load generator's CPU seconds as the caller counts them
    (`wrk=...`, `loadgen=...`)."""
    return {
        "wall": time.monotonic(),
        "machine": machine_busy_seconds(),
        "gunicorn": sum(proc_cpu_seconds(p) for p in [master_pid, *worker_pids(master_pid)]),
        "postgres": sum(proc_cpu_seconds(p) for p in postgres_pids()),
        **clients,
    }


def children_cpu_seconds() -> float:
    """CPU of the child processes this process has reaped (wrk, once it has exited)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict:
    """CPU milliseconds per request by component (every key of the snapshots but
    wall and machine), "other" (the rest of the machine's busy time: other
    processes, interrupts), and how busy the machine was."""
    delta = {k: after[k] - before[k] for k in before}
    components = [k for k in before if k not in ("wall", "machine")]
    per_request = {k: round(1000 * delta[k] / max(requests, 1), 3) for k in components}
    other = delta["machine"] - sum(delta[k] for k in components)
    per_request["other"] = round(1000 * max(other, 0.0) / max(requests, 1), 3)
    busy = 100 * delta["machine"] / (delta["wall"] * (os.cpu_count() or 1))
    return {"ms_per_request": per_request, "machine_busy_pct": round(busy, 1)}


# --- COPY floor ----------------------------------------------------------------
# What the database alone can take: the rows the endpoint wrote, written again by
# one process with COPY (new ids, so that the unique indexes work as they did).


def copy_batched(
    conn: Any, sql: str, rows: Iterator[Iterable[Any]], rows_per_commit: int, seconds: float
) -> dict[str, float]:
    """COPY `rows_per_commit` rows and commit, again and again: what a perfect
    endpoint would cost the database for one batch per transaction."""
    total = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        with conn.cursor() as cur, cur.copy(sql) as copy:
            for _ in range(rows_per_commit):
                copy.write_row(next(rows))
        conn.commit()
        total += rows_per_commit
    elapsed = time.perf_counter() - start
    return {"rows": total, "seconds": round(elapsed, 3), "rows_per_s": round(total / elapsed, 1)}


def copy_large(
    conn: Any, sql: str, rows: Iterator[Iterable[Any]], seconds: float
) -> dict[str, float]:
    """One COPY for `seconds`, then one commit: the database's bulk-load ceiling.

    The elapsed time runs to the end of the commit, which takes a while: psycopg
    queues what the server has not read yet, and the foreign keys (DEFERRABLE
    INITIALLY DEFERRED, as Django makes them) are checked row by row at commit."""
    total = 0
    start = time.perf_counter()
    deadline = start + seconds
    with conn.cursor() as cur, cur.copy(sql) as copy:
        while time.perf_counter() < deadline:
            for _ in range(1000):  # look at the clock now and then, not per row
                copy.write_row(next(rows))
            total += 1000
    conn.commit()
    elapsed = time.perf_counter() - start
    return {"rows": total, "seconds": round(elapsed, 3), "rows_per_s": round(total / elapsed, 1)}


def copy_cpu_snapshot() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "postgres": sum(proc_cpu_seconds(p) for p in postgres_pids()),
        "client": me.ru_utime + me.ru_stime,
    }


def timed_copy(copy_mode: Callable[[Any], dict[str, Any]], batch_rows: int) -> dict[str, Any]:
    """Run one COPY mode (`copy_mode(conn)`) on a new connection and add its CPU cost
    per `batch_rows` rows (one request's worth), as `cpu_ms_per_<batch_rows>_rows`.
    The second snapshot is taken before the connection closes: a backend that has
    exited no longer shows its CPU time."""
    import psycopg

    with psycopg.connect(PG_BENCH_URL) as conn:
        before = copy_cpu_snapshot()
        result = copy_mode(conn)
        after = copy_cpu_snapshot()
    batches = max(result["rows"] / batch_rows, 1)
    result[f"cpu_ms_per_{batch_rows}_rows"] = {
        k: round(1000 * (after[k] - before[k]) / batches, 3) for k in before
    }
    return result


# --- Profile (py-spy) -------------------------------------------------------------


def py_spy_path() -> str | None:
    py_spy = shutil.which("py-spy") or str(VENV / "bin" / "py-spy")
    return py_spy if Path(py_spy).exists() else None


def record_profile(
    pid: int, out: Path, seconds: int | None = None, rate: int = 200
) -> subprocess.Popen | None:
    """py-spy sampling one process for `seconds` (None: until it exits)."""
    py_spy = py_spy_path()
    if py_spy is None:
        print("  (profile skipped: py-spy not installed (pip install py-spy))")
        return None
    # --nonblocking: read the process's memory without pausing it, so the sampled
    # process keeps its share of the load; --nolineno: aggregate by function. Idle
    # samples (waiting for PostgreSQL or a connection) are left out: what remains is
    # the process's CPU time.
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", str(rate)]
    if seconds is not None:
        cmd += ["--duration", str(seconds)]
    cmd += ["--nonblocking", "--nolineno", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def start_profile(master_pid: int, seconds: int, out: Path) -> subprocess.Popen | None:
    pids = worker_pids(master_pid)
    if not pids:
        print("  (profile skipped: no gunicorn worker found)")
        return None
    return record_profile(pids[0], out, seconds)


def short_frame(frame: str) -> str:
    # "beacon (/work/main/rumserver/views.py)" -> "beacon (rumserver/views.py)"
    frame = re.sub(r"\(.*/site-packages/", "(", frame)
    return frame.replace(f"({ROOT}/", "(")


def summarize_profile(
    path: Path, view_frame: str, top: int = 20, focus: Iterable[str] = ()
) -> dict[str, Any]:
    """Sample shares from py-spy's collapsed stacks: how much of the worker's busy
    time is the view, and inside the view which functions (inclusive) and which
    leaves (self) take it. The frames above the view are gunicorn and the Django
    handler: shown as one line, "outside the view". `focus`: function names whose
    inclusive share (a stack counts once if any frame of that name, in any file, is
    below the view) to report whatever their rank, under "focus"."""
    focus = list(focus)
    inclusive: Counter[str] = Counter()
    focused: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = in_view = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short_frame(f) for f in stack.split(";")]
        total += count
        self_time[frames[-1]] += count
        if view_frame in frames:
            in_view += count
            below = frames[frames.index(view_frame) + 1 :]
            for frame in set(below):
                inclusive[frame] += count
            for name in focus:
                if any(f.startswith(f"{name} (") for f in below):
                    focused[name] += count

    def share(count: int) -> float:
        return round(100 * count / total, 1) if total else 0.0

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, share(c)) for name, c in counter.most_common(n)]

    summary: dict[str, Any] = {
        "samples": total,
        "in_view_pct": share(in_view),
        "inclusive": shares(inclusive, top),
        "self": shares(self_time, top),
    }
    if focus:
        summary["focus"] = [(name, share(focused[name])) for name in focus]
    return summary


# --- Report ------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def tree_state() -> dict[str, Any]:
    """Which code was measured: the commit, and the files changed on top of it
    (others edit the tree while benchmarks run)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    # Porcelain lines are "XY path": not stripped as a whole, or the first line's
    # leading space (" M path") would go and its path lose a character.
    modified = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified": modified}


def write_json(report: dict[str, Any], name: str, stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
