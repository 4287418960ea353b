from django.urls import path

from . import views

app_name = "catalogue"

urlpatterns = [
    path("catalogue/", views.product_list, name="list"),
    # Slugs never contain "_", so "frob-item-number-10_10" splits at the last "_".
    path("catalogue/<slug:slug>_<int:pk>/", views.product_detail, name="detail"),
    path("esi/csrf/", views.csrf_fragment, name="esi-csrf"),
    path("esi/basket/", views.basket_fragment, name="esi-basket"),
    path("basket/add/<int:pk>/", views.basket_add, name="basket-add"),
    path("dashboard/catalogue/", views.dashboard_list, name="dashboard-list"),
    path("dashboard/catalogue/products/<int:pk>/", views.dashboard_product, name="dashboard-product"),
]
