"""What the service serves right now: the loaded variants, each its own readiness
record (repository.py) holding the batcher it serves through, and the cascades and
routes over them. Built whole by the Loader, swapped whole on reload (the admin routes
of api_routes.py replace its routes alone, under the same lock).

Whether a name serves is answered here and nowhere else: a variant serves while its
`reason` is None; a cascade serves while `cascade_problem` finds nothing wrong, a route
while `route_problem` does not. `lookup` turns a name into what a request runs on, once
per request (a route's name into one of its arms), or raises NotFound / NotReady.

Reload builds a new Serving beside the old one (loading and warming every variant in a
worker thread), swaps it in, and only then stops the old batchers, which first finish
what they hold. A request that found the old set completes on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.batching import Batcher, Limits
from service.errors import NotFound, NotReady, redact
from service.metrics import Metrics
from service.repository import Variant, load_repository
from service.routes import (
    ROUTES_FILE,
    Weights,
    choose,
    naming_problem,
    point_of,
    read_routes_file,
    set_problem,
)
from service.settings import Settings
from variant import cascade, heads
from variant.backends import BackendFactory
from variant.cascade import CascadeSpec
from variant.folder import missing_files
from variant.heads import Task
from variant.manifest import NONE, ORIGINAL
from variant.tokenization import pad_id, warmup_shapes

log = logging.getLogger("slimserve.serving")


@dataclass(frozen=True)
class Cascade:
    """A cascade that can answer: its spec and the two serving variants it runs on."""

    name: str
    spec: CascadeSpec
    fast: Variant
    reference: Variant

    @property
    def labels(self) -> list[str]:
        return self.fast.labels

    @property
    def task(self) -> Task:
        return self.fast.task


@dataclass
class Serving:
    variants: dict[str, Variant]
    cascades: dict[str, CascadeSpec] = field(default_factory=dict)  # every one declared, serving or not
    routes: dict[str, Weights] = field(default_factory=dict)  # every one declared, serving or not
    routes_refused: str | None = None  # why the routes last read were refused (the ones before were kept)

    def knows(self, name: str) -> bool:
        return name in self.variants or name in self.cascades or name in self.routes

    def ready_variants(self) -> list[str]:
        """The variants that serve, in folder order."""
        return [name for name, variant in self.variants.items() if variant.ready]

    def ready_cascades(self) -> list[str]:
        return [name for name in self.cascades if self.cascade_problem(name) is None]

    def cascade_problem(self, name: str) -> str | None:
        """Why cascade `name` cannot answer now, or None when it can: it has a variant's
        name, a variant it needs does not serve, or the two cannot form a cascade."""
        if name in self.variants:
            return f"cascade {name!r} has the name of a variant"
        spec = self.cascades[name]
        missing = [m for m in (spec.fast, spec.reference) if m not in self.ready_variants()]
        if missing:
            return f"cascade {name!r} needs {', '.join(missing)}, which is not ready"
        return cascade.unfit(name, spec, {m: self.variants[m].opened.head for m in (spec.fast, spec.reference)})

    def ready_routes(self) -> list[str]:
        return [name for name in self.routes if self.route_problem(name) is None]

    def route_problem(self, name: str) -> str | None:
        """Why route `name` cannot answer now, or None when it can: its name is taken or an
        arm is no variant (routes kept after a refused file may no longer fit the folder),
        an arm it sends traffic to does not serve, or those arms answer differently."""
        arms = self.routes[name]
        problem = naming_problem(name, arms, self.variants, self.cascades, self.routes)
        if problem is not None:
            return f"route {name!r}: {problem}"
        live = sorted(arm for arm, weight in arms.items() if weight > 0)
        missing = [arm for arm in live if not self.variants[arm].ready]
        if missing:
            return f"route {name!r} needs {', '.join(missing)}, which is not ready"
        first, *others = live
        for other in others:  # a client must get the same task and labels whichever arm answers
            problem = heads.comparable(other, self.variants[other].opened.head, first, self.variants[first].opened.head)
            if problem is not None:
                return f"route {name!r}: {problem}"
        return None

    def variant(self, name: str) -> Variant:
        variant = self.variants.get(name)
        if variant is None:
            raise NotFound(f"model {name!r} not found")
        if not variant.ready:
            raise NotReady(f"model {name!r} is not ready: {variant.reason}")
        return variant

    def lookup(self, name: str, key: str | None = None) -> Variant | Cascade:
        """What a request for `name` runs on. A variant's name means the variant, even
        where a (refused) cascade or route has the same name. A route's name means the arm
        it picks (`routes.choose`; the same one for the same client `key`): the caller
        tells a routed request by the variant's name, which is then the arm's."""
        if name in self.routes and name not in self.variants and name not in self.cascades:
            problem = self.route_problem(name)
            if problem is not None:
                raise NotReady(problem)
            return self.variant(choose(self.routes[name], point_of(name, key)))
        if name in self.variants or name not in self.cascades:
            return self.variant(name)
        problem = self.cascade_problem(name)
        if problem is not None:
            raise NotReady(problem)
        spec = self.cascades[name]
        return Cascade(name, spec, self.variant(spec.fast), self.variant(spec.reference))

    def reference(self, configured: str | None) -> str | None:
        """The variant the others are compared with (/v1/compare's default, shadow sampling).

        The one home of the rule: SLIMSERVE_REFERENCE when set; else the serving variant
        that is an uncompressed export (method "none"), since agreement with the original
        is what a compressed variant is judged by; among several, `original`, else the
        alphabetically first. None when there is no such variant."""
        if configured is not None:
            return configured
        plain = sorted(n for n in self.ready_variants() if self.variants[n].opened.manifest.method == NONE)
        if ORIGINAL in plain:
            return ORIGINAL
        return plain[0] if plain else None

    async def retire_vanished(self) -> list[str]:
        """Stop serving the variants whose files were deleted from disk, so the models
        folder stays the truth; they stay listed as failed with the reason, and what they
        had queued still completes (the session is in memory)."""
        gone = [name for name in self.ready_variants() if missing_files(self.variants[name].folder)]
        for name in gone:
            variant = self.variants[name]
            variant.reason = (f"{', '.join(missing_files(variant.folder))} removed from disk while serving; "
                              "restore the folder and POST /admin/reload")
            log.warning("variant %s stops serving: %s", name, variant.reason)
            await asyncio.shield(variant.batcher.stop())  # shutdown cancels the watcher, not the drain
        return gone

    async def stop(self) -> None:
        """Stop every batcher, a retired variant's (already stopped: nothing to do) included."""
        batchers = {name: v.batcher for name, v in self.variants.items() if v.batcher is not None}
        for name, outcome in zip(batchers, await asyncio.gather(
                *(b.stop() for b in batchers.values()), return_exceptions=True)):
            if isinstance(outcome, Exception):
                log.warning("stopping %s's batcher: %s", name, outcome)


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_batch_size, settings.max_batch_tokens, settings.max_queue_delay_ms / 1000,
                  settings.max_queue, settings.batching)


def warmup_of(settings: Settings):
    """A variant's max_length → the shapes it runs once before it serves, or None: no warm-up."""
    def shapes(max_length: int) -> list[tuple[int, int]]:
        return warmup_shapes(max_length, settings.max_batch_size, settings.max_batch_tokens)
    return shapes if settings.warmup else None


def read_cascades(declared: Mapping[str, CascadeSpec], models: Path) -> dict[str, CascadeSpec]:
    """The cascades of the settings and of models/cascades.json (the file wins on a clash);
    a bad file is logged and ignored, so the variants still serve."""
    specs = dict(declared)
    try:
        specs.update(cascade.read_cascade_file(models))
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("ignoring %s: %s", models / cascade.CASCADE_FILE, str(exc).splitlines()[0])
    return specs


def read_routes(declared: Mapping[str, Weights], models: Path, serving: Serving, kept: Mapping[str, Weights]
                ) -> tuple[dict[str, Weights], str | None]:
    """The routes of the settings and of models/routes.json (the file wins on a clash), and
    None; or, when that set is refused whole (a bad file, an arm that is no variant, a name
    taken), `kept` and the reason, so one bad edit never changes what serves."""
    try:
        routes = {**declared, **read_routes_file(models)}
        problem = set_problem(routes, serving.variants, serving.cascades)
    except (OSError, ValueError) as exc:
        problem = redact(str(exc), models)
    if problem is None:
        return routes, None
    return dict(kept), f"{ROUTES_FILE} refused, the routes before it kept: {problem}"


async def build_serving(settings: Settings, metrics: Metrics, backend_of: BackendFactory,
                        kept_routes: Mapping[str, Weights]) -> Serving:
    variants = await run_in_threadpool(load_repository, settings.models, backend_of, warmup_of(settings))
    serving = Serving(variants, cascades=read_cascades(settings.cascades, settings.models))
    serving.routes, serving.routes_refused = read_routes(settings.routes, settings.models, serving, kept_routes)
    if serving.routes_refused is not None:
        log.warning("%s", serving.routes_refused)
        metrics.routes_refused.inc()
    limits = limits_of(settings)
    for name in serving.ready_variants():
        variant = variants[name]
        opened = variant.opened
        variant.batcher = Batcher(name, opened.backend, pad_id(opened.tokenizer), opened.manifest.max_length,
                                  limits, metrics)
        variant.batcher.start()
    for name in serving.cascades:
        problem = serving.cascade_problem(name)
        if problem is not None:
            log.warning("%s", problem)
    for name in serving.routes:
        problem = serving.route_problem(name)
        if problem is not None:
            log.warning("%s", problem)
    return serving


def check_shadow(settings: Settings, serving: Serving) -> None:
    """One warning when shadow sampling is asked for but has nothing to mirror to."""
    if settings.shadow_rate <= 0:
        return
    reference = serving.reference(settings.reference)
    if reference is None:
        log.warning("shadow_rate is %s but there is no reference (set SLIMSERVE_REFERENCE or serve an "
                    "uncompressed variant, method 'none'): shadow sampling is off", settings.shadow_rate)
    elif reference not in serving.ready_variants():
        log.warning("shadow_rate is %s but the reference %r is not a ready variant: nothing is mirrored",
                    settings.shadow_rate, reference)


class Loader:
    """Builds the served set from the models folder, and holds the lock every change to
    the set takes (a reload, the folder watcher retiring a variant), so two changes never
    interleave and the gauges always describe the set that serves."""

    def __init__(self, settings: Settings, metrics: Metrics, backend_of: BackendFactory) -> None:
        self.settings, self.metrics, self.backend_of = settings, metrics, backend_of
        self.lock = asyncio.Lock()

    async def load(self, previous: Serving | None = None) -> Serving:
        """A new set, its variants' gauges published (those of `previous` it lacks stop
        reporting); raises OSError when the models folder cannot be read. Routes refused
        keep those of `previous` (at start, the settings')."""
        kept = previous.routes if previous is not None else self.settings.routes
        serving = await build_serving(self.settings, self.metrics, self.backend_of, kept)
        gone = set(previous.variants) - set(serving.variants) if previous is not None else set()
        self.metrics.publish(serving.variants.values(), gone)
        check_shadow(self.settings, serving)
        return serving
