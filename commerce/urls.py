from django.urls import URLPattern, URLResolver, path

from commerce import api

# Catalog and order APIs under /api/ (staff only). The fixed paths come before the ones that
# take a SKU or an order number, which may contain slashes.
urlpatterns: list[URLPattern | URLResolver] = [
    path("products/", api.ProductListApi.as_view(), name="api-products"),
    path("products/import/", api.ProductImportApi.as_view(), name="api-products-import"),
    path("products/<path:sku>/", api.ProductDetailApi.as_view(), name="api-product"),
    path("categories/", api.CategoryListApi.as_view(), name="api-categories"),
    path("orders/", api.OrderListApi.as_view(), name="api-orders"),
    path("orders/import/", api.OrderImportApi.as_view(), name="api-orders-import"),
    path("orders/<path:number>/refunds/", api.OrderRefundApi.as_view(), name="api-order-refunds"),
    path("orders/<path:number>/", api.OrderDetailApi.as_view(), name="api-order"),
    path("shoppers/", api.ShopperListApi.as_view(), name="api-shoppers"),
    path("shoppers/<str:pk>/", api.ShopperDetailApi.as_view(), name="api-shopper"),
]
