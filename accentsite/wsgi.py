import os

# One BLAS/OpenMP thread per web thread: a web process serves GUNICORN_THREADS requests at once, and
# numpy's default of one BLAS thread per core made a 2,000-point projection/ take 5.7 s instead of
# 0.38 s on a loaded 2-core machine (the threads fight for the cores). Set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from django.core.wsgi import get_wsgi_application  # noqa: E402 (after the thread limits)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "accentsite.settings")
application = get_wsgi_application()
