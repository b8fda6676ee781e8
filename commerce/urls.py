from django.urls import URLPattern, URLResolver

# Catalog and order APIs under /api/.
urlpatterns: list[URLPattern | URLResolver] = []
