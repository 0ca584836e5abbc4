"""The user model: Django's, with room to grow (the way every new project should start)."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A user of the example shop."""

    display_name = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return self.display_name or self.username
