"""Draw the docs' figures: the README's and the tutorial's graphs, before and after runs.

Run from the repository root: ``python docs/images/make_images.py``. The
tutorial's figures come from the same code as the tutorial's examples.
"""

import pathlib
import tempfile
import time

import flowdispatch as fd
from flowdispatch.view.live import LiveGraph
from flowdispatch.view.render import visualize

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


# -- the tutorial's steps (docs/tutorial.rst) ----------------------------------------
@fd.op
def total(rows):
    return sum(row["price"] for row in rows)


@fd.op
def report(totals, settings):
    share = totals["train"] / (totals["train"] + totals["test"])
    return f"{settings['title']}: {share:.0%}"


BROKEN = {"b"}


@fd.op
def fetch(part):
    if part in BROKEN:
        raise ValueError(f"{part} is corrupt")
    return part.upper()


@fd.op
def join(parts):
    return "".join(parts)


@fd.op(retries=3, retry_on=ConnectionError, retry_delay=0.01, backoff=2)
def download(url, calls=[]):  # noqa: B006 - counts the calls, as in the tutorial
    calls.append(url)
    if len(calls) < 3:
        raise ConnectionError(f"{url} did not answer")
    return "page"


@fd.op(cache=True)
def fit(rows):
    return sum(rows) / len(rows)


class Screen:
    """Keeps the frames of a live run (as a notebook's display would show them)."""

    def __init__(self):
        self.frames = []

    def update(self, frame):
        self.frames.append(frame)


def tutorial():
    """Each step's figure, named ``tutorial-<step>.svg``."""
    rows = load("items")
    train, test = split(rows)
    train_total, test_total = total(clean(train)), total(clean(test))
    visualize(train_total, filename=HERE / "tutorial-nodes.svg")
    visualize(train_total, test_total, filename=HERE / "tutorial-graph.svg")
    settings = fd.value({"title": "train share"}, name="settings")
    summary = report({"train": train_total, "test": test_total}, settings)
    visualize(summary, filename=HERE / "tutorial-containers.svg")
    parts = [fetch(p) for p in "abc"]
    joined = join(parts)
    res = fd.run(joined, executor="sync")
    visualize(res, filename=HERE / "tutorial-failed.svg")
    BROKEN.clear()
    visualize(res.rerun(executor="sync"), filename=HERE / "tutorial-rerun.svg")
    page = download("https://example.com")
    visualize(fd.run(page, executor="sync"), filename=HERE / "tutorial-retries.svg")
    with tempfile.TemporaryDirectory() as folder, fd.config.set(cache_dir=folder):
        fd.run(fit([1, 2, 3]), executor="sync")
        visualize(fd.run(fit([1, 2, 3]), executor="sync"), filename=HERE / "tutorial-cached.svg")
    BROKEN.add("b")
    screen = Screen()
    fd.run(join([slow_fetch(p) for p in "abc"]), executor=fd.ThreadExecutor(max_workers=2),
           callbacks=[LiveGraph(screen, interval=0.05)])
    during = [f for f in screen.frames if not f.final]
    frame = max(during, key=lambda f: (len(set(f.states.values())) + ("failed" in f.states.values())))
    (HERE / "tutorial-live.svg").write_text(frame.dot.pipe(format="svg", encoding="utf-8"))


@fd.op
def slow_fetch(part):
    time.sleep(0.2 if part == "b" else 0.6)
    return fetch.fn(part)


if __name__ == "__main__":
    targets = pipeline()
    visualize(*targets, filename=HERE / "graph.svg")
    visualize(fd.run(*targets, executor="sync"), filename=HERE / "results.svg")
    tutorial()
