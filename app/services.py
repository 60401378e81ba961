"""What the HTTP layer needs at hand: a connection pool and the loaded models, one per category.

Models are loaded on first use and kept; at start-up a thread loads every category with an active version while
the server already answers (a query for one not loaded yet loads it itself, and ``/ready`` says 503 until all are
in). A category that gets re-ingested is noticed by the search itself (it answers "model replaced"), reloaded and
asked again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from app.recording import InspectionWriter
from config import Settings
from serving.inspector import Inspector
from serving.replicas import Standbys
from store import banks, inspections, models
from store.database import configure, database_url, pool_size, search_split
from store.migrate import upgrade

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database cannot be reached now; the pool reconnects by itself when it is back."""


class CategoryChanging(Exception):
    """The category's active version changed under every search of one image (``app.inspecting.served``)."""


class UnknownCategory(Exception):
    """No fitted model under that name."""


_MOST_CHECKS_BETWEEN_TRIES = 64  # a version that keeps failing to load in the background: tried about once a minute


@dataclass
class _FailedLoad:
    """A new version the background load failed on: tried again once ``checks_left`` checks have passed."""

    version: int
    tries: int
    checks_left: int


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = database_url(settings)
        self.pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=settings.pool_size or 4,
            configure=configure,
            check=ConnectionPool.check_connection,
            open=False,
            timeout=5.0,
            reconnect_timeout=0,
            kwargs={"application_name": "patchcore-api", "connect_timeout": 3, "autocommit": True},
        )
        self._inspectors: OrderedDict[str, Inspector] = OrderedDict()  # least recently asked first
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one load of a category at a time
        self._at_start: list[str] = []  # the categories the start-up thread has still to load
        self._preload = threading.Thread(target=self._load_at_start, name="category-preload", daemon=True)
        self._migrated = False
        self._split: int | None = None
        self.log_writer = InspectionWriter(self.url, settings.log_timeout_ms, settings.log_policy)
        self.standbys = Standbys(settings, self.url)
        self._closing = threading.Event()
        self._retention = threading.Thread(target=self._expire_images, name="log-retention", daemon=True)
        self._follow = threading.Thread(target=self._follow_versions, name="version-follow", daemon=True)

    def open(self) -> None:
        self.pool.open(wait=False)
        self.standbys.open()
        try:
            self.ensure_schema()
            self.split()
            active = self.run(inspections.last_asked_first)
        except DatabaseUnavailable as exc:
            log.warning("database not reachable at start (%s); will retry on each request", exc)
        else:
            self._at_start = active[: self.settings.max_loaded_categories]
            self._preload.start()
        self._retention.start()
        if self.settings.version_check_seconds > 0:
            self._follow.start()

    def _load_at_start(self) -> None:
        """Load the categories with an active version, the last asked first, in turn, while the server answers: a
        restart with many products keeps no query waiting for all of them (12.7 s for the 9 categories of the
        development database, about 1 s each), only a product's first query for its own. One that fails to load (a
        version retired under every read of its bank, say) is logged and left to load on its first query; a
        database gone ends the loading."""
        while not self._closing.is_set():
            with self._lock:
                if not self._at_start:
                    return
                category = self._at_start[0]
            try:
                self.inspector(category)
            except UnknownCategory:
                pass  # deleted since the list was read
            except Exception as exc:
                if self._closing.is_set():
                    return  # the server stops: its pool closed under the load
                if isinstance(exc, DatabaseUnavailable) and not self._answers():
                    log.warning("loading the categories at start stopped: database not reachable (%s); each loads "
                                "on its first query", exc)  # fmt: skip
                    with self._lock:
                        self._at_start.clear()
                    return
                log.exception("category %s could not be loaded at start; it is tried again on its first query",
                              category)  # fmt: skip
            with self._lock:
                self._at_start.remove(category)

    def _follow_versions(self) -> None:
        """Every ``INSPECT_VERSION_CHECK_SECONDS``, the loaded categories whose active version changed (a refit by a
        worker, a threshold or a version made active again on any server) load it in the background, so no query
        pays the load: without it the first query after a change found its version replaced and loaded the new one
        while it waited (bottle, a version of another fit: 0.6-0.9 s on 2 cores). A query that comes while the load
        runs waits for it rather than loading again; a database out of reach is tried again at the next check. A
        version that fails to load is logged once and tried again after twice as many checks each time (up to
        ``_MOST_CHECKS_BETWEEN_TRIES``), not at every check: a bank that cannot be read would otherwise fill the
        log every second; its next query tries it too."""
        unreachable = False
        failing: dict[str, _FailedLoad] = {}
        while not self._closing.wait(self.settings.version_check_seconds):
            try:
                active = self.run(models.active_ids)
            except DatabaseUnavailable as exc:
                if not unreachable:
                    log.warning("new versions not followed now (%s); tried again every %s s", exc,
                                self.settings.version_check_seconds)  # fmt: skip
                unreachable = True
                continue
            unreachable = False
            with self._lock:
                changed = {name: active[name] for name, loaded in self._inspectors.items() if active.get(name,
                           loaded.model.id) != loaded.model.id}  # fmt: skip
            for category in set(failing) - set(changed):
                del failing[category]  # loaded by a query meanwhile, unloaded, or replaced by a loaded version
            for category, version in changed.items():
                failed = failing.get(category)
                if failed is not None and failed.version == version and failed.checks_left > 0:
                    failed.checks_left -= 1
                    continue
                outcome: list[Exception] = []
                loader = threading.Thread(target=self._load_new_version, args=(category, outcome), name="version-load")
                loader.start()
                loader.join()
                failing.pop(category, None)
                if outcome and not self._closing.is_set():
                    tries = failed.tries + 1 if failed is not None and failed.version == version else 1
                    between = min(2**tries, _MOST_CHECKS_BETWEEN_TRIES)
                    failing[category] = _FailedLoad(version, tries, between - 1)
                    if tries == 1:
                        log.error("category %s: its new version %s was not loaded in the background (%s); tried "
                                  "again at growing intervals (at most %s checks apart) and by its next query",
                                  category, version, outcome[0], _MOST_CHECKS_BETWEEN_TRIES,
                                  exc_info=outcome[0])  # fmt: skip
                elif failed is not None and failed.version == version:
                    log.info("category %s: its new version %s loaded in the background after %s failed tries",
                             category, version, failed.tries)  # fmt: skip

    def _load_new_version(self, category: str, outcome: list[Exception]) -> None:
        """One background load, in a thread of its own that ends with it: the worker threads torch's parallel
        operations start for a thread live as long as it does, and kept alive behind a thread that lives on, they
        slowed every query after (bottle: embed 18.1 against 12.5 ms, search 40.6 against 23.8). Not a query: the
        category keeps its place among the least recently asked. ``outcome`` gets the error where it failed."""
        try:
            self.inspector(category, reload=True, asked=False)
        except UnknownCategory:
            pass  # deleted since: forgotten by the load
        except Exception as exc:
            outcome.append(exc)

    def loaded_versions(self) -> dict[str, int]:
        """The version each loaded category answers with in this process."""
        with self._lock:
            return {name: inspector.model.id for name, inspector in self._inspectors.items()}

    def _answers(self) -> bool:
        """Whether the database answers now (one short read)."""
        try:
            self.run(models.active_models)
        except DatabaseUnavailable:
            return False
        return True

    def loading(self) -> list[str]:
        """The categories the start-up thread has still to load that no query has loaded meanwhile (``/ready`` is
        503 until none is left)."""
        with self._lock:
            return [category for category in self._at_start if category not in self._inspectors]

    def close(self) -> None:
        self._closing.set()
        self.standbys.close()
        self.pool.close()

    def _expire_images(self) -> None:
        """Delete the inspection log's images past ``INSPECT_LOG_RETENTION_DAYS`` (the records stay), at start and
        every ``INSPECT_LOG_RETENTION_CHECK_SECONDS``; any server may do it, the statement is idempotent."""
        while True:
            try:
                expired = self.run(inspections.expire_images, self.settings.log_retention_days)
                if expired:
                    log.info("deleted the images of %s inspections older than %s days", expired,
                             self.settings.log_retention_days)  # fmt: skip
            except DatabaseUnavailable as exc:
                log.warning("inspection images not expired now (%s); next try in %s s", exc,
                            self.settings.log_retention_check_seconds)  # fmt: skip
            if self._closing.wait(self.settings.log_retention_check_seconds):
                return

    def ensure_schema(self) -> None:
        if not self._migrated:
            try:
                upgrade(self.url)
            except Exception as exc:
                raise DatabaseUnavailable(f"cannot migrate the database schema: {exc}") from exc
            self._migrated = True

    def run(self, work, *args):
        """``work(connection, *args)`` on a pooled connection; connection trouble becomes DatabaseUnavailable."""
        with self._database(), self.pool.connection() as connection:
            return work(connection, *args)

    def split(self) -> int:
        """How many connections one query's search is split over (:func:`store.database.search_split`), learnt from
        the database once; the pools grow to hold it."""
        if self._split is None:
            split = self.run(partial(search_split, self.settings))
            size = pool_size(self.settings, split)
            self.pool.resize(min(split, size), size)
            self.standbys.resize(size)
            self._split = split
            log.info("searches split over %s connections, pools of %s", split, size)
        return self._split

    def run_search(self, work, *args, parts: int | None = None):
        """``work(connections, *args)`` with up to ``parts`` (default: the search split) pooled connections: the
        first is waited for, the others only taken when free at once, so concurrent queries never wait on each
        other while holding a connection (with every connection busy, a query searches on one). With standbys,
        they answer it, and the primary only when none could (:mod:`serving.replicas`)."""
        split = parts or self.split()
        if self.standbys:
            answered, result = self.standbys.attempt(split, work, *args)
            if answered:
                return result
        with self._database(), self.pool.connection() as first:
            extra: list[psycopg.Connection] = []
            try:
                for _ in range(split - 1):
                    try:
                        extra.append(self.pool.getconn(timeout=0.001))
                    except PoolTimeout:
                        break
                return work([first, *extra], *args)
            finally:
                for connection in extra:
                    self.pool.putconn(connection)

    @contextmanager
    def _database(self) -> Iterator[None]:
        self.ensure_schema()
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(message) from exc

    def inspector(self, category: str, reload: bool = False, asked: bool = True) -> Inspector:
        """The category's loaded model, loading it (and unloading the least recently asked category past
        ``INSPECT_MAX_LOADED_CATEGORIES``) when it is not loaded or was replaced. Not ``asked`` (a new version
        loaded in the background), the category keeps its place among the least recently asked, and one unloaded
        meanwhile is not loaded again."""
        with self._lock:
            if not reload and category in self._inspectors:
                self._inspectors.move_to_end(category)
                return self._inspectors[category]
            one_load = self._loading.setdefault(category, threading.Lock())
        with one_load:  # queries that find it loading wait for that load rather than read the bank again
            return self._load(category, asked)

    def _load(self, category: str, asked: bool = True) -> Inspector:
        for _ in range(3):
            model = self.run(models.active_model, category)
            if model is None:
                self.forget(category)  # deleted: its memory bank is not kept loaded
                raise UnknownCategory(category)
            with self._lock:
                current = self._inspectors.get(category)
                if current is not None and current.model.id == model.id:
                    return current
            # a version made without a refit keeps the bank's segments: the copy is kept, or extended with the
            # segments of added normals
            try:
                bank = self._load_bank(model, current.bank if current else None)
            except LookupError:
                continue  # retired by a re-ingest between the two reads: read the new active model
            with self._lock:
                inspector = Inspector(model, bank, self.settings, previous=current)
                if not asked and category not in self._inspectors:
                    return inspector  # unloaded while its new version was read: loaded again when asked
                self._inspectors[category] = inspector  # an existing key keeps its place
                if asked:
                    self._inspectors.move_to_end(category)
                search = inspector.backend
                if search == "choose":
                    search = "HNSW or clusters, whichever its first queries find faster"
                log.info("loaded category %s (model %s, %s; search: %s on %s)", category, model.id,
                         model.config.backbone, search, inspector.device)  # fmt: skip
                accelerated = inspector.device.type != "cpu" and self.settings.search_backend == "auto"
                if accelerated and inspector.backend == "database":
                    log.warning("category %s: its memory bank's copy does not fit the %s's free memory (a quarter "
                                "kept): searched by HNSW in the database, slower (fewer categories or workers on "
                                "the device, or a larger one, keep it there)", category, inspector.device)  # fmt: skip
                limit = self.settings.max_loaded_categories
                while limit is not None and len(self._inspectors) > limit:
                    unloaded, _ = self._inspectors.popitem(last=False)
                    log.info("unloaded category %s (INSPECT_MAX_LOADED_CATEGORIES=%s)", unloaded, limit)
                return inspector
        raise DatabaseUnavailable(f"category {category} is being re-ingested; ask again")

    def _load_bank(self, model: models.StoredModel, reuse: banks.StoredBank | None) -> banks.StoredBank:
        """The version's memory bank, read on a standby when one holds all of it (its row count is the version's),
        else on the primary."""
        if self.standbys:
            answered, bank = self.standbys.attempt(
                1, lambda connections: banks.load_memory_bank(connections[0], model.bank_segments, model.dim, reuse),
                whole=lambda bank: bank.ids.size == model.memory_bank_size,
            )  # fmt: skip
            if answered:
                return bank
        return self.run(banks.load_memory_bank, model.bank_segments, model.dim, reuse)

    def forget(self, category: str) -> None:
        """Unload ``category`` (deleted): its memory bank's memory goes back."""
        with self._lock:
            if self._inspectors.pop(category, None) is not None:
                log.info("unloaded category %s (not in the database)", category)

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._inspectors)
