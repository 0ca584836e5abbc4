"""The shop app."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """A tiny shop with items."""

    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"
