"""Issue 19, the Network and Node pages in a real headless Chromium, with
real processes:

- the network page draws both domains of a two-domain topology (and the
  resolver) in its Cytoscape graph, read through the page's read-only hook
  window.mailnetGraph, and lists them in its table;
- a kill clicked on the node page turns the node's state to killed within
  2 s of the click (from the POST's reply at once, confirmed by the launcher's
  state event); the network page, open meanwhile, recolours the node from the
  event stream; `mailnet status` agrees;
- a mail sent with smtplib from jaku.com to deathstar.com draws the line
  between them and runs a dot along it, without a reload;
- the keyboard: Tab to a node's link in the list, Enter opens its page;
- large type toggles (and grows the graph's labels);
- the node page shows state, counters, the queue, the node's latest events,
  and its transcript section;
- no console errors on either page; screenshots of each (normal and large
  type).
"""
import json
import os
import smtplib
import subprocess
import sys
import time
import urllib.request
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(__file__))
import browser  # noqa: E402
import harness  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

By = browser.By


def graph_nodes(b):
    return {n["id"]: n for n in b.driver.execute_script("return window.mailnetGraph.nodes()")}


def graph_edges(b):
    return b.driver.execute_script("return window.mailnetGraph.edges()")


def colour_of(b, state):
    return b.driver.execute_script("return window.mailnetGraph.colourOf(arguments[0])", state)


def status_json(net):
    out = subprocess.run([harness.binary("mailnet"), "status", "--json", "--dir", net.run_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {n["name"]: n for n in json.loads(out.stdout)["nodes"]}


def post(topo, path):
    req = urllib.request.Request(harness.web_url(topo) + path, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def send_mail(topo, subject):
    msg = EmailMessage()
    msg["From"] = "rey@jaku.com"
    msg["To"] = "vader@deathstar.com"
    msg["Subject"] = subject
    msg.set_content("The plans are on their way.\n")
    with smtplib.SMTP("127.0.0.1", harness.port_of(topo, "jaku.com"), timeout=60) as s:
        s.send_message(msg)


def open_network(b, topo):
    b.open(harness.web_url(topo) + "/")
    b.wait(lambda d: d.execute_script("return !!window.mailnetGraph && window.mailnetGraph.available()"
                                      " && window.mailnetGraph.nodes().length > 0"), 30, "the graph")
    b.wait(lambda d: d.find_element(By.ID, "live").get_attribute("class") == "on", 30, "the event stream live")


def test_network_page_draws_and_lists_both_domains():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium() as b:
            open_network(b, topo)
            b.wait(lambda d: {"jaku.com", "deathstar.com", "resolver"} <= set(graph_nodes(b)), 30,
                   "both domains and the resolver in the graph")
            nodes = graph_nodes(b)
            for name in ("jaku.com", "deathstar.com"):
                assert nodes[name]["state"] == "ready", nodes
                assert nodes[name]["label"].startswith(name), nodes
            rows = {r.get_attribute("data-node"): r for r in b.find_all("#nodes tbody tr")}
            assert {"jaku.com", "deathstar.com", "resolver"} <= set(rows), list(rows)
            assert "ready" in rows["jaku.com"].text
            b.screenshot("network-graph")
            b.assert_no_console_errors()


def test_kill_from_the_node_page_recolours_within_two_seconds():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium() as watcher, browser.Chromium() as b:
            # The network page, open in another browser, follows from the event stream.
            open_network(watcher, topo)
            b.open(harness.web_url(topo) + "/node.html?name=deathstar.com")
            kill = b.find("button[data-action=kill]")
            b.wait(lambda d: kill.is_enabled(), 30, "the kill button enabled")
            b.wait(lambda d: "ready" in b.find("#state").text, 30, "deathstar.com shown ready")
            clicked = time.monotonic()
            kill.click()
            b.wait(lambda d: b.find("#state").text == "killed", 2, "the state killed within 2 s of the click")
            elapsed = time.monotonic() - clicked
            print(f"  node page shows killed {elapsed * 1000:.0f} ms after the click")
            assert "killed" in b.find("#state").get_attribute("class")
            b.wait(lambda d: not kill.is_enabled() and b.find("button[data-action=start]").is_enabled(), 10,
                   "kill disabled and start enabled once killed")
            killed = colour_of(watcher, "killed")
            watcher.wait(lambda d: graph_nodes(watcher)["deathstar.com"]["state"] == "killed", 30,
                         "the network page's graph recoloured from the event stream")
            assert graph_nodes(watcher)["deathstar.com"]["colour"] != graph_nodes(watcher)["jaku.com"]["colour"]
            assert killed and killed != colour_of(watcher, "ready")
            watcher.wait(lambda d: watcher.find("#nodes tr[data-node='deathstar.com']")
                         .get_attribute("data-state") == "killed", 10, "the list says killed")
            assert status_json(net)["deathstar.com"]["state"] == "killed"
            assert status_json(net)["jaku.com"]["state"] == "ready"
            b.screenshot("node-killed")
            # Start it again from the page: the reply and the event stream bring it back.
            b.find("button[data-action=start]").click()
            b.wait(lambda d: b.find("#state").text == "ready", 60, "ready again after start")
            watcher.wait(lambda d: graph_nodes(watcher)["deathstar.com"]["state"] == "ready", 30,
                         "the graph ready again")
            b.assert_no_console_errors()
            watcher.assert_no_console_errors()


def test_relayed_mail_draws_and_animates_its_line_without_reload():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium() as b:
            open_network(b, topo)
            assert graph_edges(b) == [], graph_edges(b)
            b.driver.execute_script("window.__sameDocument = true")
            send_mail(topo, "Live line")
            b.wait(lambda d: any({e["source"], e["target"]} == {"jaku.com", "deathstar.com"}
                                 for e in graph_edges(b)), 30, "the line jaku.com - deathstar.com")
            b.wait(lambda d: d.execute_script("return window.mailnetGraph.animations()") >= 1, 30,
                   "the relayed message animated")
            assert b.driver.execute_script("return window.__sameDocument === true"), "the page was reloaded"
            b.wait(lambda d: "deathstar.com" in b.find("#nodes tr[data-node='jaku.com'] td.peers").text, 10,
                   "the list names the peer")
            b.screenshot("network-mail")
            net.wait_messages("deathstar.com", "vader", 1)
            # A page opened later draws the line from the events the launcher kept.
            open_network(b, topo)
            b.wait(lambda d: any({e["source"], e["target"]} == {"jaku.com", "deathstar.com"}
                                 for e in graph_edges(b)), 30, "the line after a reload")
            b.assert_no_console_errors()


def test_keyboard_and_large_type():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        with browser.Chromium() as b:
            open_network(b, topo)
            b.wait(lambda d: len(b.find_all("#nodes tbody a")) >= 3, 30, "the list")
            size = lambda: b.driver.execute_script(  # noqa: E731
                "return parseFloat(getComputedStyle(document.querySelector('#nodes td')).fontSize)")
            graph_font = lambda: b.driver.execute_script(  # noqa: E731
                "return window.mailnetGraph.fontSize()")
            normal, normal_graph = size(), graph_font()
            b.find("#large-type").click()
            b.wait(lambda d: size() > normal * 1.3, 10, "large type in the list")
            b.wait(lambda d: graph_font() > normal_graph, 10, "large type in the graph")
            b.screenshot("network-large")
            b.find("#large-type").click()
            b.wait(lambda d: size() == normal and graph_font() == normal_graph, 10, "normal type again")
            b.assert_no_console_errors()
            # The keyboard: Tab from the top of the page to the link of jaku.com, Enter opens its page.
            b.driver.execute_script("document.activeElement && document.activeElement.blur()")
            reached = None
            for _ in range(60):
                b.driver.switch_to.active_element.send_keys(Keys.TAB)
                active = b.driver.switch_to.active_element
                if active.tag_name == "a" and active.text == "jaku.com":
                    reached = active
                    break
            assert reached is not None, "Tab never reached the link of jaku.com"
            reached.send_keys(Keys.ENTER)
            b.wait(lambda d: "node.html?name=jaku.com" in d.current_url, 30, "the node page after Enter")
            b.wait(lambda d: b.find("#title").text.endswith("jaku.com"), 30, "the node page's title")
            b.wait(lambda d: b.find("#state").text == "ready", 30, "the node page's state")
            b.screenshot("node-page")
            b.assert_no_console_errors()


def test_node_page_shows_queue_events_transcript_and_flushes():
    topo = harness.two_domain_topology()
    with harness.Network(topo) as net:
        net.start()
        post(topo, "/api/v1/nodes/deathstar.com/kill")
        send_mail(topo, "Held at jaku.com")
        with browser.Chromium() as b:
            b.open(harness.web_url(topo) + "/node.html?name=jaku.com")
            b.wait(lambda d: len(b.find_all("#queue tbody tr")) == 1, 30, "the held message in the queue")
            row = b.find("#queue tbody tr")
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            assert cells[1] == "rey@jaku.com" and cells[2] == "vader@deathstar.com", cells
            b.wait(lambda d: int(b.find("#queue tbody tr td.num").text or 0) >= 1, 30, "an attempt counted")
            b.wait(lambda d: "4.4.1" in b.find("#queue tbody tr td.error-text").text, 30, "the last error")
            b.wait(lambda d: b.find_all("#events tr[data-event=accepted]"), 30, "the accepted event")
            b.wait(lambda d: b.find("[data-fact=received]").text == "1", 30, "received 1 on the node page")
            # The transcript: the session that brought the mail, and its lines.
            b.wait(lambda d: b.find_all("#sessions button[data-session]"), 30, "the transcript's sessions")
            b.find("#sessions button[data-session]").click()
            b.wait(lambda d: "C: MAIL FROM:<REY@JAKU.COM>" in b.find("#session").text.upper(), 30, "the session's lines")
            # The resolver and deathstar.com are not touched by a flush of jaku.com; it is enabled when ready.
            post(topo, "/api/v1/nodes/deathstar.com/start")
            flush = b.find("button[data-action=flush]")
            b.wait(lambda d: flush.is_enabled(), 10, "flush enabled")
            assert not b.find("button[data-action=start]").is_enabled()
            flush.click()
            b.wait(lambda d: "flush: done" in b.find("#action-result").text, 30, "the flush's answer")
            b.wait(lambda d: b.find_all("#queue-empty"), 60, "the queue empty after the flush")
            net.wait_messages("deathstar.com", "vader", 1)
            b.screenshot("node-page-queue")
            b.assert_no_console_errors()
            # A refusal is shown: the page of a node the launcher does not know.
            b.open(harness.web_url(topo) + "/node.html?name=nowhere.example")
            b.wait(lambda d: "no node nowhere.example" in b.find("#error").text, 30, "the unknown node named")


def test_fifty_domains_drawn_in_a_grid_and_listed():
    ports = harness.free_tcp_ports(51)
    topo = {
        "name": "fifty",
        "resolver": {"listen": f"127.0.0.1:{harness.free_udp_port()}"},
        "web": {"listen": f"127.0.0.1:{ports[50]}"},
        "domains": [{"name": f"d{i:02d}.example", "listen": f"127.0.0.1:{ports[i]}", "users": ["u"]}
                    for i in range(50)],
    }
    with harness.Network(topo) as net:
        net.start(timeout=180)
        with browser.Chromium() as b:
            open_network(b, topo)
            b.wait(lambda d: len(graph_nodes(b)) == 51, 60, "50 domains and the resolver in the graph")
            assert b.driver.execute_script("return window.mailnetGraph.layout()") == "grid"
            assert len(b.find_all("#nodes tbody tr")) == 51
            nodes = graph_nodes(b)
            assert len({(round(n["x"]), round(n["y"])) for n in nodes.values()}) == 51, "nodes drawn on each other"
            print(f"  50 domains: the graph's first frame {b.driver.execute_script('return window.mailnetGraph.loadMs()')}"
                  " ms after navigation")
            b.screenshot("network-50")
            b.assert_no_console_errors()


def test_tls_modes_and_mail_over_tls_on_the_network_and_node_pages():
    """Each node's STARTTLS mode (policy.tls), relay TLS mode (policy.tls_relay)
    and the mail that came over TLS, in status --json, /api/v1/network, the
    network page's list and the node page; the transcript marks the switch."""
    topo = harness.two_domain_topology()
    topo["domains"][1]["policy"] = {"tls_relay": "opportunistic"}  # deathstar.com
    with harness.Network(topo) as net:
        net.start()
        send_mail(topo, "Over TLS between the nodes")  # plain to jaku.com, relayed over TLS to deathstar.com
        net.wait_messages("deathstar.com", "vader", 1)
        harness.wait_for(lambda: status_json(net)["deathstar.com"].get("received_tls") == 1, 30, "received_tls 1")
        status = status_json(net)
        assert (status["jaku.com"]["tls"], status["jaku.com"]["tls_relay"], status["jaku.com"]["received_tls"]) == \
            ("optional", "verify", 0), status["jaku.com"]
        assert (status["deathstar.com"]["tls"], status["deathstar.com"]["tls_relay"]) == ("optional", "opportunistic")
        with urllib.request.urlopen(harness.web_url(topo) + "/api/v1/network", timeout=60) as r:
            api = {n["name"]: n for n in json.loads(r.read())["nodes"]}
        assert {k: api["deathstar.com"][k] for k in ("tls", "tls_relay", "received", "received_tls")} == \
            {"tls": "optional", "tls_relay": "opportunistic", "received": 1, "received_tls": 1}, api["deathstar.com"]
        with browser.Chromium() as b:
            open_network(b, topo)
            cell = lambda node, attr: b.find(f'#nodes tr[data-node="{node}"] td[{attr}]').text  # noqa: E731
            b.wait(lambda d: cell("deathstar.com", 'data-count="received_tls"') == "1", 30, "1 over TLS listed")
            assert cell("deathstar.com", 'data-mode="tls"') == "optional"
            assert cell("deathstar.com", 'data-mode="tls_relay"') == "opportunistic"
            assert cell("jaku.com", 'data-mode="tls_relay"') == "verify"
            assert cell("jaku.com", 'data-count="received_tls"') == "0"
            headings = [th.text for th in b.find_all("#nodes thead th")]
            assert {"STARTTLS", "relay TLS", "over TLS"} <= set(headings), headings

            b.open(harness.web_url(topo) + "/node.html?name=deathstar.com")
            b.wait(lambda d: b.find_all("[data-fact=received_tls]"), 30, "the node's facts")
            # The facts are redrawn as events come: read each until it holds (never a stale element).
            b.wait(lambda d: b.find("[data-fact=tls]").text == "optional", 30, "STARTTLS optional")
            b.wait(lambda d: b.find("[data-fact=tls_relay]").text == "opportunistic", 30, "relay TLS opportunistic")
            b.wait(lambda d: b.find("[data-fact=received_tls]").text == "1", 30, "1 received over TLS")
            # The relay's session came over TLS: said in the list, marked in its lines.
            b.wait(lambda d: b.find_all("#sessions td[data-tls=yes]"), 30, "a session over TLS")
            assert b.find("#sessions td[data-tls=yes]").text.startswith("TLSv1.")
            b.find("#sessions td[data-tls=yes]").find_element(By.XPATH, "..").find_element(
                By.CSS_SELECTOR, "button[data-session]").click()
            b.wait(lambda d: b.find_all("#session [data-tls-switch]"), 30, "the TLS switch marked")
            lines = [s.text for s in b.find_all("#session pre span")]
            switch = next(i for i, t in enumerate(lines) if "TLS started: TLSv1." in t)
            assert "STARTTLS" in lines[switch - 1].upper() or "220" in lines[switch - 1], lines
            assert lines[switch + 1].upper().startswith("C: EHLO"), lines  # the session starts over inside TLS
            assert len(b.find_all("#session [data-tls-switch]")) == 1
            b.screenshot("node-page-tls")
            b.assert_no_console_errors()


if __name__ == "__main__":
    harness.run_tests([test_network_page_draws_and_lists_both_domains,
                       test_kill_from_the_node_page_recolours_within_two_seconds,
                       test_relayed_mail_draws_and_animates_its_line_without_reload,
                       test_keyboard_and_large_type,
                       test_node_page_shows_queue_events_transcript_and_flushes,
                       test_fifty_domains_drawn_in_a_grid_and_listed,
                       test_tls_modes_and_mail_over_tls_on_the_network_and_node_pages])
