"""Routes: one served name that splits its traffic between variants by weight, for a
canary (`{"sentiment": {"original": 90, "int8": 10}}`). The file that declares them
beside the variant folders, the rule that checks a set of them, and the rule that picks
an arm; serving.py keeps the set that serves and looks names up.

An arm is picked from a point in [0, 1) laid over the arms' cumulative weights (arms in
name order, so the file's order does not matter). With a client's key the point is a
hash of the route's name and the key: the same key lands on the same arm for as long as
the weights keep their shares, across reloads and restarts. Without one it is random.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import os
import random
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, TypeAdapter, ValidationError

from service.errors import first_error

ROUTES_FILE = "routes.json"  # in the models folder, beside cascades.json


def finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def weight(value: object) -> object:
    # JSON numbers only, kept as given (90 stays 90 in the listings); true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float) or not finite(value) or value < 0:
        raise ValueError(f"a weight is a finite number ≥ 0, not {value!r}")
    return value


def some_weight(arms: dict[str, int | float]) -> dict[str, int | float]:
    if not any(w > 0 for w in arms.values()):
        raise ValueError("at least one arm needs a weight above 0")
    if not math.isfinite(sum(map(float, arms.values()))):
        raise ValueError("the weights add up to more than a float holds")
    return arms


Weight = Annotated[int | float, BeforeValidator(weight)]
Arms = Annotated[dict[str, Weight], AfterValidator(some_weight)]  # what a route is: arm → weight
Weights = Mapping[str, int | float]  # arms already checked
ROUTES = TypeAdapter(dict[str, Arms])


def parse_routes(text: str) -> dict[str, Weights]:
    """The routes a routes file holds; ValueError naming the first bad field."""
    try:
        return ROUTES.validate_python(json.loads(text))
    except ValidationError as exc:
        raise ValueError(first_error(exc.errors())) from None


def read_routes_file(models: Path) -> dict[str, Weights]:
    """The routes of `models/routes.json` ({} without the file). Raises OSError or ValueError."""
    path = models / ROUTES_FILE
    if not path.is_file():
        return {}
    return parse_routes(path.read_text("utf-8"))


def write_routes_file(models: Path, routes: Mapping[str, Weights]) -> None:
    """Replace `models/routes.json` at once: a reader (a reload) finds the old file or the
    new one, never half of one."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=models, prefix=f".{ROUTES_FILE}.",
                                     delete=False) as out:
        json.dump(routes, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    try:
        os.replace(out.name, models / ROUTES_FILE)
    except OSError:
        os.unlink(out.name)
        raise


def naming_problem(name: str, arms: Weights, variants: Collection[str],
                   cascades: Collection[str], routes: Collection[str]) -> str | None:
    """Why route `name` cannot be declared beside these variants, cascades and routes, or
    None: its name is taken, or an arm is not a variant of the models folder."""
    if name in variants or name in cascades:
        return f"name: {name!r} is the name of a {'variant' if name in variants else 'cascade'}"
    for arm in arms:
        if arm not in variants:
            kind = "a cascade" if arm in cascades else "a route" if arm in routes else "no variant of the models folder"
            return f"arms.{arm}: {arm!r} is {kind}; an arm is a variant"
    return None


def set_problem(routes: Mapping[str, Weights], variants: Collection[str],
                cascades: Collection[str]) -> str | None:
    """Why this whole set of routes is refused, or None: the first route with a naming problem."""
    for name, arms in routes.items():
        problem = naming_problem(name, arms, variants, cascades, routes)
        if problem is not None:
            return f"route {name!r}: {problem}"
    return None


def point_of(route: str, key: str | None) -> float:
    """Where a request lands in [0, 1): a hash of the route and the client's key, else random."""
    if key is None:
        return random.random()
    digest = hashlib.sha256(f"{route}\0{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53  # 53 bits: exact as a float, below 1


def choose(arms: Weights, point: float) -> str:
    """The arm at `point` of the cumulative weights; an arm of weight 0 is never chosen."""
    names = sorted(name for name, w in arms.items() if w > 0)
    bounds = list(itertools.accumulate(arms[name] for name in names))
    at = bisect.bisect_right(bounds, point * bounds[-1])
    return names[min(at, len(names) - 1)]  # float rounding can put point × total on the total
