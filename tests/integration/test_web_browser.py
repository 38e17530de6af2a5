"""The status page in a real browser (Debian's chromium + chromedriver, driven by selenium) while
`certfailover run --web` fails a real site over: two Pebble CAs with OCSP/CRL status services,
nginx, a real revocation at the CA. The open page shows the switch without a reload; a
screenshot is kept as a test artifact (its path is printed at the end of the run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certfailover_lab.pebble import ChallTestSrv, revoke
from certfailover_lab.ports import free_port
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.stack import RevocableCA

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install '.[test]' (selenium)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FAST_SCHEDULE = """
[schedule]
crl = "1s"
ocsp = "1s"
ari = "1s"
minimum = "1s"
jitter = 0
"""


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv,
        http01_port: int) -> Iterator[tuple[RevocableCA, RevocableCA]]:
    work = tmp_path_factory.mktemp("webcas")
    a = RevocableCA(work / "a", name="web-a", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    b = RevocableCA(work / "b", name="web-b", http_port=http01_port,
                    dns_server=challtestsrv.dns_address)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (make deps)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1800"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(cond: Callable[[], bool], timeout: float, what: str,
          proc: subprocess.Popen[bytes] | None = None) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except StaleElementReferenceException:
            pass  # the live update replaced the element between finding and reading it
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_page_shows_the_failover_without_a_reload(
        tmp_path: Path, cas: tuple[RevocableCA, RevocableCA], http01_port: int, browser: object,
        artifact: Callable[[str], Path]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    assert isinstance(browser, WebDriver)
    a, b = cas
    for lab in make_lab(tmp_path, [a.entry(crl=False), b.entry()],
                        [a.pebble.root_pem(), b.pebble.root_pem()], http01_port,
                        extra_toml=FAST_SCHEDULE):
        _run(lab, a, browser, By, artifact)


def _run(lab: Lab, a: RevocableCA, browser: object, by: object,
         artifact: Callable[[str], Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    assert isinstance(browser, WebDriver)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = (lab.config_path.parent / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "certfailover.cli.main", "--config", str(lab.config_path), "-v",
         "run", "--interval", "0.5", "--web", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                with urllib.request.urlopen(url + "status.json", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False
        _wait(up, 60, "the status page", proc)

        def ready() -> bool:  # active on A, a healthy standby from B (issued by the daemon)
            st = lab.rt.db.certs("www")
            return lab.active().ca == "web-a" and any(
                c.ca == "web-b" and c.state.value == "standby" for c in st)
        _wait(ready, 120, "an active certificate on web-a and a standby on web-b", proc)
        browser.get(url + "site/www")
        _wait(lambda: "web-b" in browser.find_element(By.TAG_NAME, "main").text, 30,
              "the standby on the page")
        assert browser.find_element(By.ID, "active-cert").text.startswith("www/web-a/")
        assert not browser.find_elements(By.CSS_SELECTOR, "#events tr.ev-failover")
        browser.execute_script("window.__same_page = 'yes';")  # gone if the page reloads

        active = lab.active()
        d = Path(active.path)
        revoke(a.pebble.directory_url, a.pebble.ca_bundle, (d / "cert.pem").read_bytes(),
               (d / "privkey.pem").read_bytes(), 1)  # keyCompromise

        def switched() -> bool:
            return browser.find_element(By.ID, "active-cert").text.startswith("www/web-b/") \
                and bool(browser.find_elements(By.CSS_SELECTOR, "#events tr.ev-failover"))
        _wait(switched, 90, "the page to show the failover", proc)
        assert browser.execute_script("return window.__same_page;") == "yes", "page was reloaded"
        assert browser.find_elements(By.CSS_SELECTOR, "svg.timeline g.switch.failover")
        _wait(lambda: bool(browser.find_elements(By.CSS_SELECTOR, "svg.timeline g.bar.retired")),
              30, "the revoked certificate's bar, retired, on the timeline")
        assert lab.active().ca == "web-b" and lab.served_sha() == lab.active().sha256
        shot = artifact("web-failover-site.png")
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        browser.get(url)  # the overview: www on web-b now; keyboard reaches the filters
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-site="www"] td.active-ca')
        assert row.text == "web-b"
        assert browser.find_element(By.CSS_SELECTOR, "label[for=f-ca]").text == "Active CA"
        reached = []  # the keyboard alone: Tab from the top reaches the skip link, then the filter
        for _ in range(20):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            reached.append(browser.execute_script(
                "const e = document.activeElement; return e.id || e.className || e.tagName;"))
            if reached[-1] == "f-ca":
                break
        assert reached[0] == "skip" and reached[-1] == "f-ca", reached
        browser.save_screenshot(str(artifact("web-failover-overview.png")))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
