"""The /adadamp page in headless Chromium, live during a real fit."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import make_classifier
from dashboard_helpers import (
    REPO,
    TIMEOUT,
)
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

from dask_adadamp.dampers import AdaDamp

# --- the page in a browser -----------------------------------------------------

# The state of the page as the browser has it: rendered figures and rows.
PAGE_STATE = """
try {
    const doc = Bokeh.documents[0];
    const figures = [...Bokeh.index.query(v => v.model.type == "Figure")]
        .filter(v => v.has_finished() && v.bbox.width > 0);
    return {figures: figures.map(v => v.model.title.text),
            rows: doc.get_model_by_name("adadamp-updates").get_length(),
            epochs: doc.get_model_by_name("adadamp-epochs").get_length(),
            info: doc.get_model_by_name("adadamp-info").text,
            workers: doc.get_model_by_name("adadamp-workers").text,
            x: [...Bokeh.index.query(v => v.model.type == "GlyphRenderer")]
                .filter(v => v.model.data_source.name == "adadamp-updates")
                .map(v => v.model.glyph.x.field)};
} catch (e) {
    return null;
}
"""


def skip_or_fail(reason):
    # .ci/run installs Chromium and sets ADADAMP_REQUIRE_BROWSER: there a
    # missing browser is a CI failure, not a silent skip.
    if os.environ.get("ADADAMP_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, but ADADAMP_REQUIRE_BROWSER is set")
    pytest.skip(reason)


def browser():
    """Headless Debian chromium, or skip (fail under ADADAMP_REQUIRE_BROWSER)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        skip_or_fail("chromium and chromedriver are not installed "
                     "(apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="adadamp-chromium-")
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.binary_location = chromium
    # An explicit driver: Selenium Manager must never try a download.
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(TIMEOUT)
    driver.set_script_timeout(TIMEOUT)
    return driver, profile


def page_state(driver):
    return driver.execute_script(PAGE_STATE)


class OpenPage(Callback):
    """Opens the page after epoch 2 of the fit and checks, after epoch 4,
    that rows arrived without a reload."""

    def __init__(self, driver, url):
        self.driver = driver
        self.url = url

    def wait(self, condition):
        from selenium.webdriver.support.ui import WebDriverWait
        return WebDriverWait(self.driver, TIMEOUT, poll_frequency=0.1).until(
            lambda d: (state := page_state(d)) and condition(state) and state)

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 2:
            self.driver.get(self.url)
            self.first = self.wait(lambda s: len(s["figures"]) == 9 and s["rows"] > 0)
        elif len(net.history) == 4:
            # The page streams new rows in while the fit runs.
            self.later = self.wait(lambda s: s["epochs"] >= 3
                                   and s["rows"] > self.first["rows"])


@pytest.mark.browser
def test_page_renders_live_in_a_browser(separate_cluster, separate_client,
                                        digits_data):
    driver, profile = browser()
    _, dashboard_url = separate_cluster
    X, _, y, _ = digits_data
    opener = OpenPage(driver, dashboard_url + "/adadamp")
    try:
        est = make_classifier(client=separate_client, batch_size=AdaDamp,
                              batch_size__initial=32, max_epochs=6,
                              train_split=ValidSplit(5),
                              callbacks=[("open_page", opener)]).fit(X, y)
        assert driver.title == "dask-adadamp"
        assert opener.first["figures"] == [
            "Batch size", "Learning rate", "Workers", "Training loss",
            "Examples per second", "Loss ratio", "Update time (ms)",
            "Worker-seconds held (cumulative)", "Loss per epoch"]
        assert opener.first["info"].startswith("<b>DaskClassifier(MLP) ")
        assert "running" in opener.first["info"]
        # Each worker's calls, compute and communication, under the plots.
        workers = {a for epoch in est.history for b in epoch["batches"]
                   for a in b.get("workers_ms", ())}
        assert workers and all(a in opener.first["workers"] for a in workers)

        n_updates = est.history[-1, "model_updates"]
        done = opener.wait(lambda s: "finished" in s["info"])
        assert (done["rows"], done["epochs"]) == (n_updates, 6)
        assert f"{n_updates} model updates, 6 epochs" in done["info"]
        artifacts = Path(os.environ.get("ADADAMP_ARTIFACTS",
                                        REPO / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(artifacts / "adadamp-dashboard.png"))

        # The x-axis switch: the per-update plots go from updates to epochs.
        driver.execute_script("Bokeh.documents[0].get_model_by_name("
                              "'adadamp-x-axis').active = 1")
        # 13 glyphs: 5 single-line plots, 2 time lines, 4 worker lines and
        # the short-of-workers dots, the cumulative worker-seconds.
        opener.wait(lambda s: s["x"] == ["epochs"] * 13)
        assert driver.save_screenshot(
            str(artifacts / "adadamp-dashboard-epochs.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
