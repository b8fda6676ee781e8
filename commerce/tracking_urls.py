from django.urls import URLPattern, URLResolver

# The Segment-compatible tracking endpoints (identify, track, page, screen, group, alias, batch).
urlpatterns: list[URLPattern | URLResolver] = []
