from django.urls import URLPattern, URLResolver, path

from storefront import views

app_name = "storefront"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("products/<str:sku>/", views.product_detail, name="product"),
]
