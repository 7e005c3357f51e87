from django.contrib import admin
from django.urls import path

admin.site.site_header = "globalhub manager"
admin.site.site_title = "globalhub"
admin.site.index_title = "Hubs and what runs on them"

urlpatterns = [
    path("admin/", admin.site.urls),
]
