from django.contrib import admin
from django.urls import path, re_path

from globalhub.manager import api
from globalhub.manager.admin.overview import overview_view
from globalhub.manager.health import healthz
from globalhub.manager.metrics import metrics_view

admin.site.site_header = "globalhub manager"
admin.site.site_title = "globalhub"
admin.site.index_title = "Hubs and what runs on them"

urlpatterns = [
    # The admin index is the operator's overview (it still lists the admin's models below).
    path("admin/", admin.site.admin_view(overview_view), name="overview"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("api/hubs/", api.hubs, name="api-hubs"),
    path("api/hubs/<str:name>/", api.hub_detail, name="api-hub"),
    path("api/resync/", api.resync, name="api-resync"),
    path("api/resync-requests/<int:pk>/", api.resync_request_detail, name="api-resync-request"),
    path("api/clusters/", api.clusters, name="api-clusters"),
    path("api/policies/", api.policies, name="api-policies"),
    path("api/compliance/", api.compliance, name="api-compliance"),
    re_path(r"^api(?:/|$)", api.not_found),  # last of the api routes: any other path under /api/ is a JSON 404
]
