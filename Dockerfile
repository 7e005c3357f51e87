# One image for every globalhub Python process: the manager (web, status consumer, celery worker and beat,
# the migrate one-shot) and the agent of each hub (celery worker and beat, spec listener, inventory watcher, hub
# simulator). deploy/agent/ runs the agent's processes on a hub from this image.
# docker-compose.yml picks the process with `command:`; the default is the manager's web server.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user the processes run as (the code and collected static files stay owned by root, read-only).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, so that code changes reuse this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Static files for the admin, served by whitenoise.
# The secret key is a build-time dummy, never used at runtime.
RUN DJANGO_SECRET_KEY=build python manage.py collectstatic --noinput

USER app

EXPOSE 8000

CMD ["gunicorn", "globalhub.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2"]
