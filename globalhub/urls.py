from django.contrib import admin
from django.urls import path

from globalhub.manager import api
from globalhub.manager.metrics import metrics_view

admin.site.site_header = "globalhub manager"
admin.site.site_title = "globalhub"
admin.site.index_title = "Hubs and what runs on them"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/hubs/", api.hubs, name="api-hubs"),
    path("api/hubs/<str:name>/", api.hub_detail, name="api-hub"),
    path("api/resync/", api.resync, name="api-resync"),
    path("api/resync-requests/<int:pk>/", api.resync_request_detail, name="api-resync-request"),
]
