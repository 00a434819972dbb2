"""Helpers shared by the benchmarks in bench/ (ingest, otlp, stitch, metrics, reports).

A private PostgreSQL database, the production server (gunicorn ``rumserver.wsgi``)
on a free port, or Django in the script's own process; CPU accounting by process,
the COPY floor, timings in one process, py-spy summaries and the JSON results; the
services whose spans the OTLP and stitch benchmarks send. Nothing here knows about one
endpoint: the scripts pass what differs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = ROOT / ".venv"
RESULTS = BENCH / "results"

# The PostgreSQL server the benchmarks use (user postgres, trust auth): the machine's
# own, or another one on another port (LLMRUM_BENCH_PG=127.0.0.1:5433), say with
# settings of a production server, to compare the two with the same code.
PG_SERVER = os.environ.get("LLMRUM_BENCH_PG", "127.0.0.1:5432")
PG_ADMIN_URL = f"postgres://postgres@{PG_SERVER}/postgres"
PG_BENCH_DB = "llmrum_bench"
PG_BENCH_URL = f"postgres://postgres@{PG_SERVER}/{PG_BENCH_DB}"
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
    return f"postgres://postgres@{PG_SERVER}/{database}"


def setup_django(database: str, **env: str) -> None:
    """Django in this process, with the production settings, on the private database
    ``database``; the caller's LLMRUM_* and DJANGO_* variables are dropped (they would
    change what is measured), ``env`` adds variables."""
    for key in [k for k in os.environ if k.startswith(("LLMRUM_", "DJANGO_"))]:
        del os.environ[key]
    os.environ.update(
        DATABASE_URL=pg_url(database),
        CELERY_BROKER_URL=BROKER_URL,
        DJANGO_SETTINGS_MODULE="rumserver.settings",
        SECRET_KEY="bench",
        **env,
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def server_env(
    settings_module: str,
    limits: dict[str, str],
    database_url: str = PG_BENCH_URL,
    tree: Path = ROOT,
) -> dict[str, str]:
    """The server's environment: the bench database (`database_url`, llmrum_bench
    unless a benchmark has its own), Redis db 15, `limits` (the rate limits a
    benchmark raises) and the settings module. `tree`: the checkout whose code the
    server runs (another one for a comparison; bench/ stays this one's)."""
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
            p for p in [str(tree), str(BENCH), os.environ.get("PYTHONPATH")] if p
        ),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(limits)
    return env


def server_env_pairs(pairs: list[str]) -> dict[str, str]:
    """--server-env NAME=VALUE options as a dict."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--server-env {pair!r}: expected NAME=VALUE")
        env[name] = value
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
    env: dict[str, str], port: int, workers: int, log: Path, extra: list[str], tree: Path = ROOT
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
            cmd, cwd=tree, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
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


@contextmanager
def running_gunicorn(
    env: dict[str, str],
    port: int,
    workers: int,
    log: Path,
    extra: list[str],
    tree: Path = ROOT,
    label: str = "gunicorn",
) -> Iterator[subprocess.Popen]:
    """gunicorn started from `tree`, answering /healthz; stopped on the way out."""
    print(
        f"{label}: rumserver.wsgi from {tree} on 127.0.0.1:{port}, {workers} sync workers, "
        "access log off"
    )
    server = start_gunicorn(env, port, workers, log, extra, tree)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", server, log)
        yield server
    finally:
        stop_process_group(server)
        print(f"{label}: stopped; its log: {log.stat().st_size if log.exists() else 0} bytes")


def comparison_tree(spec: str, tmp: Path) -> tuple[Path, str]:
    """The code a run compares with (--compare): a checkout's directory as it is, or
    a revision of this repository exported into `tmp` (`git archive`: no worktree,
    nothing left in .git). Returns the directory and a label for the report."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "rumserver" / "wsgi.py").exists():
            raise SystemExit(f"--compare {spec}: no rumserver/wsgi.py in that directory")
        return path.resolve(), str(path)
    done = subprocess.run(
        ["git", "rev-parse", "--short", f"{spec}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"--compare {spec}: neither a directory nor a revision of {ROOT}")
    commit = done.stdout.strip()
    dest = tmp / f"tree-{commit}"
    dest.mkdir()
    archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout)
    archive.stdout.close()  # type: ignore[union-attr]
    if archive.wait() != 0 or untar.returncode != 0:
        raise SystemExit(f"--compare {spec}: could not export {commit}")
    return dest, commit


# --- Rounds: a target per round, passes over them, another tree to compare ------------
# bench/ingest and bench/otlp measure several targets (noop, the endpoint, the endpoint
# with chunked bodies, the same on another tree's server) in one run, as rounds; every
# pass runs each round once.


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def add_round_args(parser: argparse.ArgumentParser, rounds: Sequence[str], main: str) -> None:
    """The options bench/ingest and bench/otlp share for their rounds; `main` is the
    endpoint's own round (sized bodies)."""
    parser.add_argument(
        "--profile-round",
        default=main,
        choices=rounds,
        help=f"the round --profile samples, on its first pass ({main})",
    )
    parser.add_argument(
        "--chunk-bytes",
        type=_at_least(0),
        default=0,
        help="bytes a chunk in the chunked round (0: the whole body in one chunk, as Node's "
        "http sends a body written at once, the OpenTelemetry JS exporters' way)",
    )
    parser.add_argument(
        "--compare",
        metavar="REV_OR_DIR",
        help="also measure this code (a git revision, exported with git archive, or a "
        "checkout's directory) in a second gunicorn on the same database: its noop and "
        f"{main} rounds, reported as ours / compared",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --compare: load both servers at the same time (the compared noop and "
        f"{main} rounds with ours), so that a busy machine weighs on both alike",
    )
    parser.add_argument(
        "--repeat",
        type=_at_least(1),
        default=1,
        help="passes over the rounds, every other one in reverse order (1; 2 or more to "
        "compare rates within a few per cent)",
    )
    parser.add_argument(
        "--rounds",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        metavar="NAME,...",
        help=f"only these rounds ({main} always; all of {', '.join(rounds)} by default), e.g. "
        f"{main},compare_{main} with --repeat 8 to compare just those",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the servers (both), e.g. "
        "LLMRUM_CACHE_URL=redis://127.0.0.1:6379/15 for rate limits shared through Redis",
    )


@dataclass
class Comparison:
    """The other code a run measures (--compare), if any, and --server-env."""

    spec: str | None
    tree: Path | None
    label: str
    env: dict[str, str]

    def as_json(self) -> dict[str, str] | None:
        if self.tree is None:
            return None
        return {"spec": str(self.spec), "label": self.label, "dir": str(self.tree)}


def comparison(args: argparse.Namespace, tmp: Path) -> Comparison:
    env = server_env_pairs(args.server_env)
    for name, value in env.items():
        print(f"            {name}={value}")
    if not args.compare:
        return Comparison(None, None, "", env)
    tree, label = comparison_tree(args.compare, tmp)
    print(f"compare: {args.compare} -> {tree} (label {label})")
    return Comparison(args.compare, tree, label, env)


@contextmanager
def gunicorn_servers(
    args: argparse.Namespace,
    limits: dict[str, str],
    compare: Comparison,
    tmp: Path,
    port: int,
) -> Iterator[dict[str, tuple[subprocess.Popen, int]]]:
    """Our gunicorn on `port` and, with --compare, the other tree's on another port,
    same settings, database and environment (`limits` and --server-env): "current"
    and "compare", each (process, port). Both stopped on the way out."""
    extra = shlex.split(args.gunicorn_args)
    with ExitStack() as stack:
        env = server_env(args.settings, limits | compare.env)
        server = running_gunicorn(env, port, args.workers, tmp / "gunicorn.log", extra)
        servers = {"current": (stack.enter_context(server), port)}
        if compare.tree is not None:
            other_port = free_port()
            other = running_gunicorn(
                server_env(args.settings, limits | compare.env, tree=compare.tree),
                other_port,
                args.workers,
                tmp / "gunicorn-compare.log",
                extra,
                tree=compare.tree,
                label=f"gunicorn ({compare.label})",
            )
            servers["compare"] = (stack.enter_context(other), other_port)
        yield servers


def pass_figures(
    measured: dict[str, list[Any]],
    storing: Iterable[str],
    combine_stored: Callable[[list[dict[str, Any]]], dict[str, Any]],
    result_json: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """What every round's passes (each with .result, .cpu and .stored) add up to: CPU
    a request over all passes (weighted by requests), the stored-row checks of the
    `storing` rounds combined (`combine_stored` of their passes' checks; a round whose
    passes hold none is left out), and each pass as JSON (`result_json` of its result)."""
    storing = set(storing)
    passes = len(next(iter(measured.values()), []))
    return {
        "cpu": {
            name: merge_cpu([(m.cpu, m.result.requests) for m in runs])
            for name, runs in measured.items()
        },
        "stored": {
            name: combine_stored([m.stored for m in runs])
            for name, runs in measured.items()
            if name in storing and any(m.stored is not None for m in runs)
        },
        "passes": [
            {
                name: result_json(runs[i].result) | {"cpu": runs[i].cpu, "stored": runs[i].stored}
                for name, runs in measured.items()
            }
            for i in range(passes)
        ],
    }


def round_order(names: list[Any], repeat: int) -> list[Any]:
    """The rounds of one repeat: forward, then backward on the next (A B B A), so
    that a load that grows or fades through the run, or tables that grow, weigh on
    every target alike over an even number of repeats."""
    return names if repeat % 2 == 0 else names[::-1]


def chosen_rounds(args: argparse.Namespace, rounds: dict[str, Any], main: str) -> dict[str, Any]:
    """The planned rounds --rounds keeps (the endpoint's own round always)."""
    if args.rounds is None:
        return rounds
    unknown = set(args.rounds) - set(rounds)
    if unknown:
        raise SystemExit(f"--rounds: no round {', '.join(sorted(unknown))} in this run")
    return {name: r for name, r in rounds.items() if name in args.rounds or name == main}


def round_groups(args: argparse.Namespace, names: list[str], main: str) -> list[tuple[str, ...]]:
    """The rounds as run: one at a time, or with --side-by-side each compared round at
    the same time as ours (noop with compare_noop, `main` with compare_`main`)."""
    if not args.side_by_side:
        return [(name,) for name in names]
    groups = []
    for name in names:
        if name.startswith("compare_") and name.removeprefix("compare_") in names:
            continue  # runs with ours
        partner = f"compare_{name}"
        groups.append((name, partner) if partner in names else (name,))
    return groups


def run_passes(
    args: argparse.Namespace,
    groups: list[tuple[str, ...]],
    measure_group: Callable[[tuple[str, ...], bool], tuple[dict[str, Any], dict[str, Any] | None]],
) -> tuple[dict[str, list[Any]], dict[str, Any] | None]:
    """--repeat passes over the groups of rounds (see round_groups, round_order):
    `measure_group(names, profile)` loads the rounds of one group at the same time,
    with py-spy on --profile-round's server when `profile` (--profile, first pass),
    and returns ({name: its result}, the profile summary or None). Returns every
    round's results in pass order, and the profile."""
    measured: dict[str, list[Any]] = {name: [] for group in groups for name in group}
    profile = None
    if args.profile and args.profile_round not in measured:
        print(f"(profile skipped: no {args.profile_round} round in this run)")
    for repeat in range(args.repeat):
        if args.repeat > 1:
            print(f"pass {repeat + 1} of {args.repeat}")
        for group in round_order(groups, repeat):
            sample = args.profile and args.profile_round in group and repeat == 0
            # Side by side, ours starts first on one pass and last on the next.
            results, summary = measure_group(tuple(round_order(list(group), repeat)), sample)
            for name, result in results.items():
                measured[name].append(result)
            profile = summary or profile
    return measured, profile


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


# A backend's title: "postgres: 15/main: <user> <database> <host>(<port>) <state>".
_BACKEND_TITLE = re.compile(rb"^postgres: [^:]+: \S+ (\S+) \S+\(\d+\)")


def postgres_pids(database: str | None = None) -> list[int]:
    """Every postgres process; with `database`, the backends of other databases
    left out (other work on the machine: test suites on their own databases), the
    server's own processes (WAL writer, checkpointer, ...) kept."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                if database is not None:
                    title = re.match(_BACKEND_TITLE, (entry / "cmdline").read_bytes())
                    if title and title.group(1).decode() != database:
                        continue
                pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def postgres_cpu(database: str | None = None) -> dict[int, float]:
    """CPU seconds by postgres process (see postgres_pids)."""
    return {pid: proc_cpu_seconds(pid) for pid in postgres_pids(database)}


def machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(master_pid: int, **clients: float) -> dict[str, Any]:
    """Wall clock, machine busy time, gunicorn (master + workers), PostgreSQL (the
    bench database's backends and the server's own processes, by process) and the
    load generator's CPU seconds as the caller counts them (`wrk=...`,
    `loadgen=...`)."""
    return {
        "wall": time.monotonic(),
        "machine": machine_busy_seconds(),
        "gunicorn": sum(proc_cpu_seconds(p) for p in [master_pid, *worker_pids(master_pid)]),
        "postgres": postgres_cpu(PG_BENCH_DB),
        **clients,
    }


def cpu_delta(before: float | dict[int, float], after: float | dict[int, float]) -> float:
    """CPU seconds between two snapshots of one component. By process (a dict): the
    processes alive at the end, new ones in full; one that exited meanwhile (another
    suite's connection) is left out instead of taking its whole past off the sum."""
    if isinstance(before, dict) and isinstance(after, dict):
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return after - before  # type: ignore[operator]


def cpu_side_by_side(
    before: list[dict[str, Any]], after: list[dict[str, Any]], requests: list[int]
) -> list[dict[str, Any]]:
    """cpu_per_request for servers loaded at the same time, one (before, after) pair of
    cpu_snapshot per server, taken together: gunicorn is each server's own, per its
    requests; PostgreSQL, the load generator and the rest of the machine are shared,
    per request of all of them. With one server, cpu_per_request."""
    if len(before) == 1:
        return [cpu_per_request(before[0], after[0], requests[0])]
    total = max(sum(requests), 1)
    b0, a0 = before[0], after[0]
    shared = {k: cpu_delta(b0[k], a0[k]) for k in b0 if k not in ("wall", "machine", "gunicorn")}
    own = [cpu_delta(b["gunicorn"], a["gunicorn"]) for b, a in zip(before, after, strict=True)]
    machine = cpu_delta(b0["machine"], a0["machine"])
    other = max(machine - sum(own) - sum(shared.values()), 0.0)
    busy = round(100 * machine / ((a0["wall"] - b0["wall"]) * (os.cpu_count() or 1)), 1)
    return [
        {
            "ms_per_request": {
                "gunicorn": round(1000 * seconds / max(n, 1), 3),
                **{k: round(1000 * v / total, 3) for k, v in shared.items()},
                "other": round(1000 * other / total, 3),
            },
            "machine_busy_pct": busy,
        }
        for seconds, n in zip(own, requests, strict=True)
    ]


def children_cpu_seconds() -> float:
    """CPU of the child processes this process has reaped (wrk, once it has exited)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def cpu_per_request(before: dict[str, Any], after: dict[str, Any], requests: int) -> dict:
    """CPU milliseconds per request by component (every key of the snapshots but
    wall and machine), "other" (the rest of the machine's busy time: other
    processes, interrupts), and how busy the machine was."""
    delta = {k: cpu_delta(before[k], after[k]) for k in before}
    components = [k for k in before if k not in ("wall", "machine")]
    per_request = {k: round(1000 * delta[k] / max(requests, 1), 3) for k in components}
    other = delta["machine"] - sum(delta[k] for k in components)
    per_request["other"] = round(1000 * max(other, 0.0) / max(requests, 1), 3)
    busy = 100 * delta["machine"] / (delta["wall"] * (os.cpu_count() or 1))
    return {"ms_per_request": per_request, "machine_busy_pct": round(busy, 1)}


def merge_cpu(parts: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """cpu_per_request of several rounds of one target (each with its request
    count) as one: the per-request figures weighted by requests."""
    total = sum(requests for _, requests in parts) or 1
    keys = parts[0][0]["ms_per_request"]
    return {
        "ms_per_request": {
            k: round(sum(cpu["ms_per_request"][k] * n for cpu, n in parts) / total, 3) for k in keys
        },
        "machine_busy_pct": round(sum(cpu["machine_busy_pct"] for cpu, _ in parts) / len(parts), 1),
    }


def same_run_ratios(
    targets: dict[str, dict[str, Any]],
    cpu: dict[str, dict[str, Any]],
    rates: Iterable[tuple[str, str, str]],
    cpus: Iterable[tuple[str, str, str]] = (),
) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """Ratios between the targets of one run: `rates` are (name, numerator,
    denominator) of ok answers a second (`ok_per_s`, with `passes_ok_per_s` per pass);
    `cpus` of CPU milliseconds a request, as two ratios: `gunicorn_<name>` (the
    server alone) and `own_<name>` (server, PostgreSQL and load generator: what a
    request costs the machine, "other" left out, so less disturbed by a busy machine
    than the rates). Returns the ratios over all passes and the rate ratios within
    each pass (their spread says how far to trust the first). A pair with a target
    the run did not measure is left out."""
    ratios: dict[str, float | None] = {}
    by_pass: dict[str, list[float | None]] = {}
    for name, a, b in rates:
        if a in targets and b in targets:
            ratios[name] = ratio(targets[a]["ok_per_s"], targets[b]["ok_per_s"])
            passes = zip(targets[a]["passes_ok_per_s"], targets[b]["passes_ok_per_s"], strict=True)
            by_pass[name] = [ratio(x, y) for x, y in passes]

    def own(ms: dict[str, float]) -> float:
        return sum(v for k, v in ms.items() if k != "other")

    for name, a, b in cpus:
        if a in cpu and b in cpu:
            ms_a, ms_b = cpu[a]["ms_per_request"], cpu[b]["ms_per_request"]
            ratios[f"gunicorn_{name}"] = ratio(ms_a["gunicorn"], ms_b["gunicorn"])
            ratios[f"own_{name}"] = ratio(own(ms_a), own(ms_b))
    return ratios, by_pass


def print_checks(report: dict[str, Any], checks: dict[str, bool], main: str) -> None:
    """The issues' targets, met or missed (for context: nothing fails a run), plus
    chunked >= 0.9 x sized and, with --compare, >= 0.95 x the compared code (`main`:
    the endpoint's round)."""
    ratios, labels = report["ratios"], report["labels"]
    # Side by side, the chunked round's own figure is the one against the compared server.
    for name in (f"{main}_chunked_over_{main}_beside_compare", f"{main}_chunked_over_{main}"):
        if name in ratios:
            checks["chunked >= 0.9 x sized"] = (ratios[name] or 0) >= 0.9
            break
    if f"{main}_over_compare_{main}" in ratios:
        compared = labels[f"compare_{main}"].removesuffix(f" {main}")
        checks[f">= 0.95 x {compared}"] = (ratios[f"{main}_over_compare_{main}"] or 0) >= 0.95
    print("targets: " + ", ".join(f"{k} ({'met' if v else 'missed'})" for k, v in checks.items()))
    if report["config"]["profiled"]:
        print(
            f"(py-spy sampled a worker during the {report['config']['profile_round']} round: "
            "its figures are lower)"
        )


def chunked_beside_compare(
    ratios: dict[str, float | None], by_pass: dict[str, list[float | None]], main: str
) -> None:
    """Side by side, the chunked and the sized round of ours ran at different times,
    each beside the compared server's sized round: chunked / sized, each divided
    first by the compared server's rate beside it, is what the load did not move.
    Added to `ratios` and `by_pass` as `<main>_chunked_over_<main>_beside_compare`."""
    chunked, sized = f"{main}_chunked_over_compare_{main}_chunked", f"{main}_over_compare_{main}"
    if chunked not in ratios or sized not in ratios:
        return
    name = f"{main}_chunked_over_{main}_beside_compare"
    ratios[name] = ratio(ratios[chunked] or 0.0, ratios[sized] or 0.0)
    by_pass[name] = [
        ratio(a or 0.0, b or 0.0) for a, b in zip(by_pass[chunked], by_pass[sized], strict=True)
    ]


def print_ratio(label: str, value: float | None, by_pass: list[float | None] | None) -> None:
    spread = f"   (passes: {', '.join(str(v) for v in by_pass)})" if by_pass else ""
    print(f"{label:<47} {value}{spread}")


def print_ratios(report: dict[str, Any], lines: dict[str, str]) -> None:
    """The ratios of `lines` (name: label) the run has, each with its value in every
    pass when there were several."""
    ratios, by_pass = report["ratios"], report["ratios_by_pass"]
    several = report["config"]["repeat"] > 1
    for name, label in lines.items():
        if name in ratios:
            print_ratio(label, ratios[name], by_pass.get(name) if several else None)


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


def copy_cpu_snapshot() -> dict[str, Any]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"postgres": postgres_cpu(PG_BENCH_DB), "client": me.ru_utime + me.ru_stime}


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
        k: round(1000 * cpu_delta(before[k], after[k]) / batches, 3) for k in before
    }
    return result


# --- Timings in one process ---------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int, digits: int) -> dict[str, float]:
    """``fn`` called ``repeat`` times: the median and the 95th percentile in
    milliseconds, rounded to ``digits``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), digits),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], digits),
    }


# The head of a stage script (bench/otlp, bench/stitch), as source text: those scripts
# run in a `manage.py shell` process of their own, whose functions the timers wrap.
# timed(owner, name, label) wraps owner.name so that each call adds its seconds to
# spent[label] and one to calls[label]; a name the code does not have is skipped.
STAGE_TIMERS = r"""
import time
from collections import defaultdict

clock = time.perf_counter
spent, calls = defaultdict(float), defaultdict(int)

def timed(owner, name, label):
    fn = getattr(owner, name, None)
    if fn is None:
        return
    def wrapper(*a, **k):
        start = clock()
        try:
            return fn(*a, **k)
        finally:
            spent[label] += clock() - start
            calls[label] += 1
    setattr(owner, name, wrapper)
"""


# --- OTLP bodies: the services whose spans bench/otlp and bench/stitch send -------------
# A FastAPI chat gateway (OpenAI client instrumentation) and a vLLM model server, with
# the resource attributes real SDKs set.

GATEWAY_RESOURCE = {
    "service.name": "chat-gateway",
    "service.namespace": "llm",
    "service.version": "2.14.1",
    "service.instance.id": "8d3f4c1e-5b7a-4e22-9a61-0f3c2b7d9e15",
    "deployment.environment.name": "production",
    "host.name": "gw-7f9c6d58b-x2kqp",
    "host.arch": "amd64",
    "os.type": "linux",
    "process.pid": 7,
    "process.runtime.name": "cpython",
    "process.runtime.version": "3.12.7",
    "telemetry.sdk.name": "opentelemetry",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.version": "1.28.2",
}
MODEL_RESOURCE = {
    "service.name": "vllm-llama-8b",
    "service.version": "0.6.4",
    "host.name": "gpu-node-3",
    "k8s.namespace.name": "inference",
    "k8s.pod.name": "vllm-llama-8b-6c9f7d7b9-8wz4t",
    "os.type": "linux",
    "telemetry.sdk.name": "opentelemetry",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.version": "1.26.0",
}
HTTP_SCOPE = {"name": "opentelemetry.instrumentation.fastapi", "version": "0.49b2"}
GENAI_SCOPE = {"name": "opentelemetry.instrumentation.openai_v2", "version": "2.1b0"}
VLLM_SCOPE = {"name": "vllm.llm_engine", "version": "0.6.4"}


def set_attributes(target: Any, values: dict[str, Any]) -> None:
    """Fill a protobuf ``repeated KeyValue`` from a dict: bool, int, float, str, or a
    list of str."""
    for key, value in values.items():
        kv = target.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        elif isinstance(value, list):
            for item in value:
                kv.value.array_value.values.add().string_value = item
        else:
            kv.value.string_value = value


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
    # "beacon (/work/main/rumserver/ingest/views.py)" -> "beacon (rumserver/ingest/views.py)"
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


def median_by(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The item of the median ``key`` (the lower middle one of an even count): a
    benchmark's repeated rounds, kept whole so that its other figures go with it."""
    return sorted(items, key=lambda item: item[key])[(len(items) - 1) // 2]


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


def print_code(report: dict[str, Any]) -> None:
    """Which code ran, what it was compared with, and how the chunked round framed
    its bodies: the lines under a report's title."""
    tree, config = report["tree"], report["config"]
    print(
        f"code: {tree['commit']}"
        + (f" + changes in {', '.join(tree['modified'])}" if tree["modified"] else "")
    )
    if report.get("compare"):
        compare = report["compare"]
        how = "at the same time as ours" if config.get("side_by_side") else "same run"
        print(f"compared with: {compare['label']} ({compare['dir']}), same database, {how}")
    if config.get("server_env"):
        print(f"server env: {' '.join(f'{k}={v}' for k, v in config['server_env'].items())}")
    chunks = config["chunk_bytes"]
    print(
        "chunked round: Transfer-Encoding: chunked, no Content-Length, "
        + (f"{chunks}-byte chunks" if chunks else "the body in one chunk")
    )


def print_cpu(report: dict[str, Any], labels: dict[str, str]) -> None:
    """CPU milliseconds a request by process for each target, and a note where other
    processes took a good share of the machine meanwhile."""
    for name, cpu in report["cpu"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu["ms_per_request"].items())
        print(
            f"CPU ms/request  {labels[name]:<18} {parts}  "
            f"(machine {cpu['machine_busy_pct']:.0f}% busy, {report['machine']['cpus']} cores)"
        )
        share = cpu["ms_per_request"]["other"] / max(sum(cpu["ms_per_request"].values()), 1e-9)
        if share > 0.1:
            print(
                f"  note: other processes took {100 * share:.0f}% of the CPU during the "
                f"{labels[name]} rounds; the machine was not quiet, so the figures are low"
            )


def write_json(report: dict[str, Any], name: str, stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
