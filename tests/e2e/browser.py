"""A real headless Chromium for the dashboard's tests (Debian's chromium and
chromium-driver, driven by python3-selenium).

    with browser.Chromium() as b:
        b.open(url)                      # waits for the page to load
        b.wait(lambda d: ..., 10, "what we wait for")
        b.screenshot("network")          # build/screenshots/network.png
        b.assert_no_console_errors()     # CSP refusals and script errors included

Chromium runs with a fresh profile in a temporary folder (removed at the
end), without any of its background connections, and is stopped by the pids
this process started, also when a test fails."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402,F401  (re-exported for the tests)
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("MAILNET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MAILNET_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT_DIR = os.path.abspath(os.environ.get("MAILNET_SCREENSHOT_DIR") or
                                 os.path.join(harness.BIN_DIR, "..", "screenshots"))


def _descendants(pid):
    found, frontier = [], [pid]
    for _ in range(10000):
        if not frontier:
            break
        parent = frontier.pop()
        for child in harness.children_of(parent):
            found.append(child)
            frontier.append(child)
    return found


class Chromium:
    def __init__(self, width=1280, height=900, downloads=None):
        self.profile = tempfile.mkdtemp(prefix="mailnet-chromium-")
        self.downloads = downloads
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check",
                     f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        if downloads:
            options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                                      "download.prompt_for_download": False})
        self.service = Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL) \
            if "log_output" in Service.__init__.__code__.co_varnames else Service(executable_path=CHROMEDRIVER)
        self.driver = None
        self._driver_pid = None
        self._console = []
        try:
            self.driver = webdriver.Chrome(service=self.service, options=options)
            self._driver_pid = self.service.process.pid if self.service.process else None
            self.driver.set_page_load_timeout(60)
            self.driver.set_script_timeout(60)
        except BaseException:
            self.close()
            raise

    def open(self, url, timeout=30):
        self.driver.get(url)
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete", timeout,
                  f"{url} to load")

    def wait(self, predicate, timeout, what):
        """predicate(driver) true within timeout seconds, or an AssertionError naming what."""
        try:
            # A page that redraws may replace an element between finding it and
            # reading it (stale): that is "not yet", as a missing one is.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
                lambda d: predicate(d))
        except Exception as e:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {type(e).__name__}") from None

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def console(self):
        """Every console entry so far (a list of dicts: level, message)."""
        self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    def console_errors(self):
        return [e for e in self.console() if e.get("level") == "SEVERE"]

    def assert_no_console_errors(self):
        errors = self.console_errors()
        assert not errors, "console errors:\n" + "\n".join(e.get("message", "") for e in errors)

    def screenshot(self, name):
        os.makedirs(SCREENSHOT_DIR, exist_ok=True)
        path = os.path.join(SCREENSHOT_DIR, name + ".png")
        self.driver.save_screenshot(path)
        return path

    def close(self):
        pids = []
        if self._driver_pid:
            pids = [self._driver_pid] + _descendants(self._driver_pid)
        if self.driver is not None:
            try:
                self.driver.quit()
            except Exception:
                pass
            self.driver = None
        try:
            self.service.stop()
        except Exception:
            pass
        deadline = time.monotonic() + 10
        for pid in pids:
            while harness.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if harness.pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
