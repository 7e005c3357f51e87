"""Django settings for the globalhub manager. Every value comes from the environment, with local defaults.

Nothing here connects to a service: settings are read at import, connections are made by the processes.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from globalhub.envconf import env_bool, env_duration, env_int, env_str
from globalhub.manager.conf import ManagerSettings, metrics_address, periodic_resync_intervals, shared_status_topic
from globalhub.protocol.events import RESYNC_TYPES

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false")
    SECRET_KEY = "insecure-local-development-key-set-DJANGO_SECRET_KEY-in-production"
ALLOWED_HOSTS = [h.strip() for h in env_str("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "globalhub.manager",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "globalhub.urls"
WSGI_APPLICATION = "globalhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "postgres://globalhub:globalhub@127.0.0.1:55432/globalhub"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Behind TLS (DJANGO_HTTPS=true, see docs/operations.md): cookies only over HTTPS, HTTP redirected, HSTS, and the
# TLS-terminating proxy's X-Forwarded-Proto trusted. Off by default so a local http://127.0.0.1 login works.
HTTPS = env_bool("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^metrics$", r"^healthz$"]  # scraped and probed inside the network
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000, minimum=0)
    # Both bind every subdomain for a year: on only when the operator says so (docs/operations.md).
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# Celery (manager side): Redis broker, JSON only, tasks acknowledged after they ran.
CELERY_BROKER_URL = env_str("REDIS_URL", "redis://127.0.0.1:56379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True


def _consumer_metrics_addr() -> str:
    address = env_str("GH_CONSUMER_METRICS_ADDR", "127.0.0.1:9108")
    try:
        metrics_address(address)
    except ValueError as error:
        raise ImproperlyConfigured(f"GH_CONSUMER_METRICS_ADDR={error}") from None
    return address


def _shared_status_topic() -> str:
    try:
        return shared_status_topic(
            env_str("GH_SHARED_STATUS_TOPIC", ""), env_str("GH_STATUS_TOPIC_PREFIX", "gh-status.")
        )
    except ValueError as error:
        raise ImproperlyConfigured(str(error)) from None


# globalhub itself (see README "Configuration").
GLOBALHUB = ManagerSettings(
    spec_topic=env_str("GH_SPEC_TOPIC", "gh-spec"),
    status_topic_prefix=env_str("GH_STATUS_TOPIC_PREFIX", "gh-status."),
    consumer_group=env_str("GH_CONSUMER_GROUP", "global_hub"),
    consumer_batch_size=env_int("GH_CONSUMER_BATCH_SIZE", 500, minimum=1),
    consumer_batch_bytes=env_int("GH_CONSUMER_BATCH_BYTES", 16 * 1024 * 1024, minimum=1),
    # How long the group waits for a consumer that stopped heartbeating (kill -9, lost host, broker restart) before
    # its hubs move to another member: the classic broker's smallest (group.min.session.timeout.ms), not
    # librdkafka's 45 s, which kept a restarted consumer without partitions for 45 s or more.
    consumer_session_timeout=env_duration("GH_CONSUMER_SESSION_TIMEOUT", "6s"),
    # Static membership: a restarted process with the same id takes its partitions back at once. One id per
    # process (e.g. the StatefulSet pod name); two processes with one id fence each other.
    consumer_instance_id=env_str("GH_CONSUMER_INSTANCE_ID", "") or None,
    # How soon a new hub's topic is noticed by the pattern subscription.
    topic_refresh_ms=env_int("GH_TOPIC_REFRESH_MS", 5000, minimum=100),
    db_retry_max=env_duration("GH_DB_RETRY_MAX", "30s"),
    hub_timeout=env_duration("GH_HUB_TIMEOUT", "5m"),
    probe_interval=env_duration("GH_PROBE_INTERVAL", "2m"),
    # How often every hub topic's end is read from Kafka for the consumer lag ("refresh topic ends" schedule).
    topic_ends_interval=env_duration("GH_TOPIC_ENDS_INTERVAL", "1m"),
    startup_grace=env_duration("GH_STARTUP_GRACE", env_str("GH_HUB_TIMEOUT", "5m")),
    periodic_resync_interval=env_duration("GH_PERIODIC_RESYNC_INTERVAL", "12h"),
    # GH_PERIODIC_RESYNC_INTERVAL_<TYPE> (e.g. _MANAGEDCLUSTER, _POLICY_LOCALSPEC): one type's own interval.
    periodic_resync_intervals=periodic_resync_intervals(t.short for t in RESYNC_TYPES),
    # A resync request still not complete this long after it was requested shows as overdue.
    resync_overdue=env_duration("GH_RESYNC_OVERDUE", "10m"),
    # Events (the event.* streams) are kept this long after their own time; the "prune events" schedule deletes
    # older ones.
    event_retention=env_duration("GH_EVENT_RETENTION", "90d"),
    # Recorded Celery task runs (TaskRun) are kept this long; the "prune events" schedule deletes older ones.
    task_run_retention=env_duration("GH_TASK_RUN_RETENTION", "7d"),
    # Upstream's bring-your-own-Kafka default: one status topic for every hub, the hub named by each event's
    # source. Off by default: any producer on it can speak for any hub (docs/protocol.md, "Shared status topic").
    shared_status_topic=_shared_status_topic(),
    # Each status consumer serves its own metrics (the ingest batch histogram) here; "" serves none.
    consumer_metrics_addr=_consumer_metrics_addr(),
)
