"""gunicorn settings for the web container (``gunicorn -c gunicorn.conf.py accentsite.wsgi``).

Every value can be overridden by the environment (``GUNICORN_WORKERS``, ``GUNICORN_THREADS``,
``GUNICORN_TIMEOUT``, ...). Workers are ``gthread``: each process serves ``GUNICORN_THREADS``
requests at once, so a request waiting on I/O (``/predict`` waiting for its worker's answer, a
slow client's upload) holds a thread, not the whole process; docs/reliability.md has the flood
measurement behind the defaults.
With ``PROMETHEUS_MULTIPROC_DIR`` set, every web process writes its prometheus-client samples
there and any of them answers /metrics with the sums (recognition/metrics.py); the folder is
emptied when gunicorn starts and a dead worker's live gauges are dropped.
"""
import os
import shutil

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:  # samples of a previous run would be summed into this one's
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
