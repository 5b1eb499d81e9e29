"""Issue 19, the dashboard's pages in a real headless Chromium: each is
served from launcher/web/static by the launcher with a Content-Security-Policy
that allows only the dashboard's own scripts, loads without console errors,
and shows the network it belongs to."""
import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import browser  # noqa: E402
import harness  # noqa: E402


def get(url_host, path):
    host, port = url_host.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_assets_are_served_with_their_policy():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        listen = topo["web"]["listen"]
        status, headers, body = get(listen, "/")
        assert status == 200 and headers["content-type"].startswith("text/html"), (status, headers)
        assert "script-src 'self'" in headers["content-security-policy"], headers
        assert b"/app.js" in body
        status, headers, body = get(listen, "/vendor/cytoscape.min.js")
        assert status == 200, (status, body[:200])
        assert headers["content-type"].startswith("text/javascript"), headers
        assert len(body) > 100_000
        for path in ("/../CMakeLists.txt", "/%2e%2e/web_api.cpp", "/static/app.js", "/nope.html", "/.hidden.js"):
            status, _, body = get(listen, path)
            assert status == 404, (path, status, body[:200])


def test_network_page_lists_both_domains_without_errors():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium() as b:
            b.open(harness.web_url(topo) + "/")
            for domain in ("jaku.com", "deathstar.com"):
                b.wait(lambda d, domain=domain: domain in d.find_element(browser.By.TAG_NAME, "main").text, 30,
                       f"{domain} on the network page")
            b.screenshot("network-list")
            b.assert_no_console_errors()


if __name__ == "__main__":
    harness.run_tests([test_assets_are_served_with_their_policy, test_network_page_lists_both_domains_without_errors])
