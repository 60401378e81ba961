"""An API process follows its loaded categories' new versions in the background (``INSPECT_VERSION_CHECK_SECONDS``)."""

from __future__ import annotations

import logging
import time

from psycopg import sql

from app.services import Services
from config import Settings
from revisions.threshold import set_threshold
from store import banks, models
from store.database import connect
from store.migrate import upgrade
from tests.api.conftest import EVALUATION


def _until(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_version_loaded_in_the_background_keeps_its_category_s_place_among_the_least_recently_asked(
    fitted, database_url
):
    """A new version loaded by the follower is no query: past ``INSPECT_MAX_LOADED_CATEGORIES`` the category asked
    least recently is still the one unloaded."""
    upgrade(database_url)
    with connect(database_url) as connection:
        for name in ("first", "second", "third"):
            models.save_model(connection, name, fitted, EVALUATION, Settings())
    services = Services(Settings(database_url=database_url, max_loaded_categories=2, version_check_seconds=0.1))
    services.open()
    try:
        _until(lambda: not services.loading(), "the start-up loads")
        services.inspector("first")
        services.inspector("second")  # asked after "first"
        assert services.loaded() == ["first", "second"]
        with connect(database_url) as connection:
            active = models.active_model(connection, "first")
            new = set_threshold(connection, active, "test", value=active.threshold + 0.01)
        _until(lambda: services.loaded_versions()["first"] == new, "the follower loads first's new version")
        services.inspector("third")
        assert services.loaded() == ["second", "third"]  # "first" was asked least recently, whatever was loaded
    finally:
        services.close()


def test_a_new_version_that_fails_to_load_is_logged_once_and_tried_again_until_it_loads(fitted, database_url, caplog):
    """A version whose bank cannot be read (here its partition detached, as if a retirement had dropped it) fills no
    log: one error, then tries at growing intervals, and once its bank is readable again it is loaded with no
    query asking."""
    caplog.set_level(logging.INFO, logger="app.services")
    upgrade(database_url)
    with connect(database_url) as connection:
        first = models.save_model(connection, "steady", fitted, EVALUATION, Settings())["model_id"]
    services = Services(Settings(database_url=database_url, version_check_seconds=0.05))
    services.open()
    try:
        _until(lambda: services.loaded_versions() == {"steady": first}, "the start-up load")
        with connect(database_url) as connection:  # the new version and its bank unreadable, in one commit
            second = models.save_model(connection, "steady", fitted, EVALUATION, Settings())["model_id"]
            partition = sql.Identifier(banks.partition_name(second))
            connection.execute(sql.SQL("ALTER TABLE patches DETACH PARTITION {}").format(partition))
        time.sleep(2.5)  # 50 checks
        failures = [r for r in caplog.records if "was not loaded in the background" in r.getMessage()]
        assert len(failures) == 1 and f"new version {second}" in failures[0].getMessage(), caplog.text
        assert services.loaded_versions() == {"steady": first}
        with connect(database_url) as connection:
            connection.execute(
                sql.SQL("ALTER TABLE patches ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    partition, sql.Literal(second)
                )
            )

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if "loaded in the background after" in r.getMessage()]

        _until(said, "loaded once readable", seconds=15)  # logged once its load has ended
        assert services.loaded_versions() == {"steady": second}
        loaded = said()
        assert len(loaded) == 1 and int(loaded[0].split(" after ")[1].split()[0]) >= 3, loaded
    finally:
        services.close()
