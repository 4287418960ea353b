from django.contrib.auth.decorators import user_passes_test
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_cookie

from .forms import ProductPriceForm
from .models import Product

HISTORY_COOKIE = "history"
HISTORY_MAX = 20

staff_required = user_passes_test(lambda u: u.is_active and u.is_staff)


def product_list(request):
    return render(request, "catalogue/product_list.html", {"products": Product.objects.all()})


def _history(request):
    raw = request.COOKIES.get(HISTORY_COOKIE, "")
    return [int(v) for v in raw.split(",") if v.isdigit()]


@vary_on_cookie
def product_detail(request, slug, pk):
    product = get_object_or_404(Product, pk=pk)
    response = render(request, "catalogue/product_detail.html", {"product": product})

    # Recently viewed products, most recent last.
    history = [p for p in _history(request) if p != product.pk] + [product.pk]
    response.set_cookie(
        HISTORY_COOKIE, ",".join(str(p) for p in history[-HISTORY_MAX:]), path="/"
    )
    return response


@never_cache
def csrf_fragment(request):
    return render(request, "catalogue/csrf_fragment.html")


@never_cache
def basket_fragment(request):
    context = {
        "count": len(request.session.get("basket", [])),
        "username": request.user.username if request.user.is_authenticated else "anonymous",
    }
    return render(request, "catalogue/basket_fragment.html", context)


@require_POST
def basket_add(request, pk):
    product = get_object_or_404(Product, pk=pk)
    request.session["basket"] = request.session.get("basket", []) + [product.pk]
    return redirect(product)


@staff_required
def dashboard_list(request):
    return render(request, "catalogue/dashboard_list.html", {"products": Product.objects.all()})


@staff_required
def dashboard_product(request, pk):
    product = get_object_or_404(Product, pk=pk)
    form = ProductPriceForm(request.POST or None, instance=product)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("catalogue:dashboard-list")
    return render(request, "catalogue/dashboard_product.html", {"product": product, "form": form})
