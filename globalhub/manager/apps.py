from django.apps import AppConfig


class ManagerConfig(AppConfig):
    name = "globalhub.manager"
    label = "manager"
    verbose_name = "Global hub manager"
