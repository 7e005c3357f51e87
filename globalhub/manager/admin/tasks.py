"""Tasks and schedules: the recorded outcome of every task run, and django-celery-beat's schedules with their
arguments checked and their intervals read as durations."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django_celery_beat.admin import IntervalScheduleAdmin, PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from globalhub.manager.admin.base import ReadOnlyAdmin
from globalhub.manager.models import TaskRun
from globalhub.manager.schedules import check_arguments, every_text

STATUS_COLOURS = {
    TaskRun.Status.STARTED: "#417690",
    TaskRun.Status.SUCCEEDED: "#2e7d32",
    TaskRun.Status.FAILED: "#c62828",
    TaskRun.Status.RETRYING: "#ef6c00",
}


def status_badge(status: str) -> SafeString:
    colour = STATUS_COLOURS.get(status, "#666")  # type: ignore[call-overload]
    return format_html(
        '<span class="task-status task-status-{}" style="background:{};color:#fff;padding:1px 6px;'
        'border-radius:8px;white-space:nowrap">{}</span>',
        status,
        colour,
        status,
    )


class TaskNameFilter(admin.SimpleListFilter):
    """The task names that have runs (the model has no choices for them)."""

    title = "task"
    parameter_name = "task_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = TaskRun.objects.order_by("task_name").values_list("task_name", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(task_name=self.value()) if self.value() else queryset


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    """What each task run did: read-only, written by the workers (``globalhub.celery``)."""

    list_display = ["started_at", "task_name", "badge", "runtime", "periodic_task_name", "worker", "short_result"]
    list_filter = ["status", TaskNameFilter, "periodic_task_name"]
    search_fields = ["task_id", "task_name", "periodic_task_name", "error"]
    date_hierarchy = "started_at"
    fields = (
        "task_id",
        "task_name",
        "badge",
        "periodic_task_name",
        "arguments",
        "worker",
        "started_at",
        "finished_at",
        "runtime",
        "result",
        "error_text",
    )
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # pruned by GH_TASK_RUN_RETENTION

    @admin.display(description="status", ordering="status")
    def badge(self, run: TaskRun) -> SafeString:
        return status_badge(run.status)

    @admin.display(description="runtime", ordering="runtime_seconds")
    def runtime(self, run: TaskRun) -> str:
        if run.runtime_seconds is None:
            return "—"
        return f"{run.runtime_seconds * 1000:.0f} ms" if run.runtime_seconds < 1 else f"{run.runtime_seconds:.1f} s"

    @admin.display(description="result")
    def short_result(self, run: TaskRun) -> str:
        """The result, or the error's last line (the exception)."""
        lines = run.error.strip().splitlines()
        text = run.result or (lines[-1] if lines else "")
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="error")
    def error_text(self, run: TaskRun) -> str:
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', run.error) if run.error else "—"


class CheckedPeriodicTaskForm(PeriodicTaskForm):  # type: ignore[misc]
    """django-celery-beat's form, refusing arguments the task would fail on (an unknown hub, type, or name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "interval" in self.fields:
            field = self.fields["interval"]
            field.label_from_instance = every_text

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean()
        if "args" in self.errors or "kwargs" in self.errors:
            return data  # malformed JSON, already said
        try:
            check_arguments(str(data.get("task") or ""), data.get("args") or "[]", data.get("kwargs") or "{}")
        except ValueError as error:
            self.add_error(self._field_of(str(error), data), str(error))
        return data

    @staticmethod
    def _field_of(error: str, data: dict[str, Any]) -> str:
        """The field an error belongs to: ``args`` when it names them or the arguments were all given there."""
        only_args = (data.get("args") or "").strip() not in ("", "[]") and (data.get("kwargs") or "").strip() in (
            "",
            "{}",
        )
        return "args" if error.startswith("args") or only_args else "kwargs"


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class CheckedPeriodicTaskAdmin(PeriodicTaskAdmin):  # type: ignore[misc]
    """The schedules: arguments checked when saved, intervals shown as durations, runs linked to their outcomes."""

    form = CheckedPeriodicTaskForm
    list_display = ("name", "enabled", "every", "task", "last_run_at", "runs", "one_off")

    @admin.display(description="schedule", ordering="interval__every")
    def every(self, task: PeriodicTask) -> str:
        if task.interval is not None:
            return every_text(task.interval)
        return str(task.scheduler)

    @admin.display(description="task runs")
    def runs(self, task: PeriodicTask) -> SafeString:
        url = reverse("admin:manager_taskrun_changelist") + "?" + urlencode({"periodic_task_name": task.name})
        return format_html('<a href="{}">runs</a>', url)

    @admin.action(description="Run selected tasks")
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        """Send them to a worker now. Sending is all this can tell: whether a run succeeded shows in the task runs
        (django-celery-beat's own action says "successfully run" for a task that then raises)."""
        from globalhub.celery import app

        app.loader.import_default_modules()
        schedules = list(queryset)
        missing = sorted(s.name for s in schedules if s.task not in app.tasks)
        if missing:
            self.message_user(request, f"Nothing sent: no such task for {', '.join(missing)}.", messages.ERROR)
            return
        for schedule in schedules:
            options: dict[str, Any] = {"headers": {"periodic_task_name": schedule.name}}
            if schedule.queue:
                options["queue"] = schedule.queue
            app.tasks[schedule.task].apply_async(
                args=json.loads(schedule.args or "[]"), kwargs=json.loads(schedule.kwargs or "{}"), **options
            )
        url = reverse("admin:manager_taskrun_changelist")
        self.message_user(
            request,
            format_html(
                '{} sent to a worker: whether they succeed shows in <a href="{}">Task runs</a>.',
                f"{len(schedules)} task{'s' if len(schedules) != 1 else ''}",
                url,
            ),
            messages.INFO,
        )


admin.site.unregister(IntervalSchedule)


@admin.register(IntervalSchedule)
class DurationIntervalScheduleAdmin(IntervalScheduleAdmin):  # type: ignore[misc]
    list_display = ("__str__", "duration")

    @admin.display(description="duration")
    def duration(self, schedule: IntervalSchedule) -> str:
        return every_text(schedule)
