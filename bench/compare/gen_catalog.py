#!/usr/bin/env python3
"""Writes the static catalog the comparison origin serves.

    gen_catalog.py OUTDIR [PRODUCTS] [CATEGORIES]

OUTDIR/products/{1..PRODUCTS}            one product, compact JSON, about 2 KB
OUTDIR/categories/{1..CATEGORIES}/products  first page of a listing, about 8 KB

Files carry no extension: the origin serves every file as application/json,
so `/products/42` is the file `products/42`. The output is deterministic
(fixed seed), so every run serves the same bytes.
"""
import json
import os
import random
import sys

out = sys.argv[1]
n_products = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
n_categories = int(sys.argv[3]) if len(sys.argv) > 3 else 50
per_page = 20

rng = random.Random(20240601)
adjectives = ["Classic", "Urban", "Trail", "Everyday", "Premium", "Lightweight", "Organic",
              "Vintage", "Compact", "Deluxe", "Essential", "Heritage", "Performance", "Soft"]
nouns = ["Backpack", "Jacket", "Sneaker", "Mug", "Lamp", "Headphones", "Watch", "Blender",
         "Notebook", "Sweater", "Bottle", "Chair", "Tent", "Scarf", "Speaker", "Kettle"]
brands = ["Northwind", "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli"]
colors = ["black", "white", "navy", "olive", "sand", "red", "grey", "teal"]
materials = ["cotton", "recycled polyester", "stainless steel", "oak", "leather", "wool", "aluminium"]
words = ("made for daily use with a durable finish and carefully chosen materials that hold up "
         "to travel commuting and weekend trips designed in our studio tested in the field "
         "easy to clean backed by a two year warranty with free returns within thirty days").split()


def sentence(n):
    s = " ".join(rng.choice(words) for _ in range(n))
    return s[0].upper() + s[1:] + "."


def category_of(pid):
    return (pid - 1) % n_categories + 1


products = {}
for pid in range(1, n_products + 1):
    cat = category_of(pid)
    name = f"{rng.choice(adjectives)} {rng.choice(nouns)} {pid}"
    slug = name.lower().replace(" ", "-")
    price = round(rng.uniform(4.99, 499.0), 2)
    p = {
        "id": pid,
        "sku": f"SKU-{cat:03d}-{pid:06d}",
        "slug": slug,
        "name": name,
        "brand": rng.choice(brands),
        "description": " ".join(sentence(rng.randint(14, 20)) for _ in range(6)),
        "price": price,
        "compare_at_price": round(price * rng.uniform(1.1, 1.4), 2),
        "currency": "EUR",
        "tax_rate": 0.2,
        "stock": {"available": rng.randint(0, 500), "reserved": rng.randint(0, 20),
                  "warehouse": rng.choice(["PAR-1", "FRA-2", "AMS-1"]), "backorder": rng.random() < 0.1},
        "category_id": cat,
        "category_ids": sorted({cat, rng.randint(1, n_categories)}),
        "images": [{"url": f"https://cdn.example.com/img/{pid}/{i}.jpg", "width": 1200, "height": 1200,
                    "alt": f"{name}, view {i}"} for i in range(1, rng.randint(3, 4) + 1)],
        "attributes": {"color": rng.choice(colors), "material": rng.choice(materials),
                       "size": rng.choice(["XS", "S", "M", "L", "XL", "one size"]),
                       "weight_g": rng.randint(80, 5000),
                       "dimensions_cm": [rng.randint(5, 80), rng.randint(5, 80), rng.randint(2, 40)]},
        "ratings": {"average": round(rng.uniform(2.5, 5.0), 1), "count": rng.randint(0, 4000)},
        "variants": [{"sku": f"SKU-{cat:03d}-{pid:06d}-{v}", "size": sz, "stock": rng.randint(0, 80),
                      "price": price} for v, sz in enumerate(rng.sample(["S", "M", "L", "XL"], 3))],
        "seo": {"title": f"{name} | Example Shop", "description": sentence(16)},
        "tags": rng.sample(["new", "sale", "eco", "bestseller", "gift", "limited", "outdoor", "home"], 3),
        "shipping": {"free": price > 50, "days_min": 1, "days_max": rng.randint(2, 7)},
        "created_at": f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
        "updated_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:30:00Z",
    }
    products[pid] = p

os.makedirs(os.path.join(out, "products"), exist_ok=True)
sizes = []
for pid, p in products.items():
    body = json.dumps(p, separators=(",", ":")).encode()
    sizes.append(len(body))
    with open(os.path.join(out, "products", str(pid)), "wb") as f:
        f.write(body)

cat_sizes = []
for cat in range(1, n_categories + 1):
    members = [p for p in products.values() if p["category_id"] == cat]
    listing = {
        "category": {"id": cat, "name": f"Category {cat}", "slug": f"category-{cat}"},
        "page": 1, "per_page": per_page, "total": len(members),
        "pages": (len(members) + per_page - 1) // per_page,
        "items": [{"id": p["id"], "sku": p["sku"], "name": p["name"], "slug": p["slug"],
                   "brand": p["brand"], "price": p["price"], "compare_at_price": p["compare_at_price"],
                   "currency": p["currency"], "image": p["images"][0]["url"],
                   "short_description": p["description"][:80],
                   "in_stock": p["stock"]["available"] > 0, "rating": p["ratings"],
                   "url": f"/products/{p['id']}"}
                  for p in members[:per_page]],
    }
    body = json.dumps(listing, separators=(",", ":")).encode()
    cat_sizes.append(len(body))
    os.makedirs(os.path.join(out, "categories", str(cat)), exist_ok=True)
    with open(os.path.join(out, "categories", str(cat), "products"), "wb") as f:
        f.write(body)

print(f"{n_products} products, mean {sum(sizes) / len(sizes):.0f} B; "
      f"{n_categories} listings, mean {sum(cat_sizes) / len(cat_sizes):.0f} B")
