"""Items for sale."""

from django.db import models


class Item(models.Model):
    """Something for sale."""

    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
