#!/usr/bin/env python3
"""Run the shop: ``serve.py PORT DATA_DIR``.

Migrates and seeds a SQLite database in DATA_DIR, then serves on 127.0.0.1:PORT.
"""

import os
import sys
from decimal import Decimal
from pathlib import Path

PRODUCT_COUNT = 200
USERS = [
    # username, password, is_staff
    ("staff", "staff-pass", True),
    ("alice", "alice-pass", False),
]


def seed():
    from django.contrib.auth.models import User

    from catalogue.models import Product

    existing = set(Product.objects.values_list("pk", flat=True))
    Product.objects.bulk_create(
        Product(
            pk=pk,
            name=f"Frob item number {pk}",
            slug=f"frob-item-number-{pk}",
            price=Decimal("10.00") + pk,
        )
        for pk in range(1, PRODUCT_COUNT + 1)
        if pk not in existing
    )

    for username, password, is_staff in USERS:
        if not User.objects.filter(username=username).exists():
            User.objects.create_user(username, password=password, is_staff=is_staff)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: serve.py PORT DATA_DIR")
    port, data_dir = int(sys.argv[1]), Path(sys.argv[2]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    os.environ["SHOP_DATA_DIR"] = str(data_dir)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    seed()
    call_command("runserver", f"127.0.0.1:{port}", use_reloader=False, skip_checks=True)


if __name__ == "__main__":
    main()
