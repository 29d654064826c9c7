# One image for web, workers, beat and flower; the command picks the role.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps resemblyzer==0.1.4 \
    && pip install --no-cache-dir boto3
COPY . .
ENV PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache
RUN DJANGO_SECRET_KEY=build python manage.py collectstatic --noinput
EXPOSE 8000
