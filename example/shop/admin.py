"""Items in the Django admin."""

from django.contrib import admin

from shop.models import Item


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    """List items with their prices."""

    list_display = ["name", "price"]
