"""Draw the README's example images: ``graph.svg`` (before a run), ``results.svg`` (after).

Run from the repository root: ``python docs/images/make_images.py``.
"""

import pathlib
import time

import flowdispatch as fd
from flowdispatch.render import visualize

HERE = pathlib.Path(__file__).parent


@fd.op
def load(path):
    time.sleep(0.02)
    return [{"id": i, "price": i * 1.5} for i in range(10)]


@fd.op(nout=2)
def split(rows):
    return rows[::2], rows[1::2]


@fd.op
def clean(rows):
    time.sleep(0.01)
    return [r for r in rows if r["price"] > 0]


@fd.op(retries=2, retry_on=ConnectionError)
def fetch_rates(url):
    raise ConnectionError(f"cannot reach {url}")


@fd.op
def convert(rows, rates):
    return [{**r, "price": r["price"] * rates["EUR"]} for r in rows]


@fd.op
def merge(a, b):
    return a + b


@fd.op
def summarize(rows, config):
    return {"n": len(rows)}


def pipeline():
    train, test = split(load("data/items.csv"))
    rates = fetch_rates("https://rates.example.com")
    config = fd.value({"currency": "EUR", "top": 5}, name="config")
    table = merge(clean(train), clean(test))
    return summarize(table, config), convert(table, rates)


if __name__ == "__main__":
    targets = pipeline()
    visualize(*targets, filename=HERE / "graph.svg")
    visualize(fd.run(*targets, executor="sync"), filename=HERE / "results.svg")
