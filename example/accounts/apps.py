"""The accounts app."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users of the example site."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
