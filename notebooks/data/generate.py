"""Generate data/sales.csv: synthetic daily unit sales per store and item, deterministic.

In the spirit of the CD4ML workshop's Favorita data: weekly seasonality, promotions, store and
item effects, noise. Run `python data/generate.py` to regenerate (same bytes every time).
"""
from __future__ import annotations

import csv
import math
import random
from datetime import date, timedelta
from pathlib import Path

STORES, ITEMS, DAYS = 8, 8, 100
START = date(2017, 1, 1)


def rows(seed: int = 2017):
    rng = random.Random(seed)
    store_effect = [rng.uniform(0.6, 1.6) for _ in range(STORES)]
    item_base = [rng.uniform(4, 40) for _ in range(ITEMS)]
    weekly = [1.0, 0.9, 0.85, 0.9, 1.05, 1.35, 1.25]
    for day in range(DAYS):
        when = START + timedelta(days=day)
        trend = 1 + 0.002 * day
        for store in range(STORES):
            for item in range(ITEMS):
                promo = rng.random() < 0.15
                mean = item_base[item] * store_effect[store] * weekly[when.weekday()] * trend * (1.4 if promo else 1)
                sales = max(0.0, rng.gauss(mean, math.sqrt(mean) * 1.2))
                yield [when.isoformat(), store + 1, 1000 + item, int(promo), round(sales, 1)]


def main() -> None:
    out = Path(__file__).with_name("sales.csv")
    with out.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["date", "store_nbr", "item_nbr", "onpromotion", "unit_sales"])
        writer.writerows(rows())


if __name__ == "__main__":
    main()
