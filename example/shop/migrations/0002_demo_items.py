from decimal import Decimal

from django.db import migrations


def add_items(apps, schema_editor):
    Item = apps.get_model("shop", "Item")
    for name, price in [("Teapot", "18.50"), ("Kettle", "32.00"), ("Mug", "6.90")]:
        Item.objects.get_or_create(name=name, defaults={"price": Decimal(price)})


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [migrations.RunPython(add_items, migrations.RunPython.noop)]
