from django import forms

from .models import Product


class ProductPriceForm(forms.ModelForm):
    class Meta:
        model = Product
        fields = ["price"]
