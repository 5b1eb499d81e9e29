"""`mailnet validate` refuses every topology `mailnet up` could not run, and
`up` of such a topology starts nothing: domains named like the run folder's
own files, port 0, one address under two spellings, a domain on the
resolver's address. Each error names the file, the JSON path and the fault."""
import copy
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def broken_topologies():
    """(what, topology, JSON path, words the error must hold) for each class."""
    base = harness.two_domain_topology()
    resolver = base["resolver"]["listen"]
    jaku_port = harness.port_of(base, "jaku.com")
    cases = []

    def case(what, path, words, change):
        topo = copy.deepcopy(base)
        change(topo)
        cases.append((what, topo, path, words))

    for name in ("network.json", "Topology.JSON", "mailnet.sock", "launcher.pid", "launcher.log", "resolver"):
        case("domain " + name, "$.domains[1].name", [name.lower(), "run folder"],
             lambda t, n=name: t["domains"][1].update(name=n))
    case("port 0", "$.domains[1].listen", ["port from 1 to 65535"],
         lambda t: t["domains"][1].update(listen="127.0.0.1:0"))
    case("resolver on port 0", "$.resolver.listen", ["port from 1 to 65535"],
         lambda t: t["resolver"].update(listen="127.0.0.1:0"))
    case("[::1] twice", "$.domains[1].listen", ["duplicate address", "$.domains[0].listen"],
         lambda t: (t["domains"][0].update(listen=f"[::1]:{jaku_port}"),
                    t["domains"][1].update(listen=f"[0:0:0:0:0:0:0:1]:{jaku_port}")))
    case("localhost and 127.0.0.1", "$.domains[1].listen", ["duplicate address"],
         lambda t: t["domains"][1].update(listen=f"localhost:{jaku_port}"))
    case("the resolver's address", "$.domains[1].listen", ["resolver's address"],
         lambda t: t["domains"][1].update(listen=resolver.replace("127.0.0.1", "localhost")))
    return cases


def test_validate_and_up_refuse_what_up_cannot_run():
    for what, topo, path, words in broken_topologies():
        with harness.Network(topo) as net:
            check = subprocess.run([harness.binary("mailnet"), "validate", net.topology_file],
                                   capture_output=True, text=True, timeout=30)
            assert check.returncode == 2, f"{what}: validate exited {check.returncode}: {check.stdout}{check.stderr}"
            assert f"{net.topology_file}: {path}: " in check.stderr, f"{what}: {check.stderr}"
            for w in words:
                assert w in check.stderr, f"{what}: {w!r} not in {check.stderr!r}"
            net.start(wait_ready=False)
            code = net.proc.wait(timeout=30)
            net.reader.join(timeout=5)
            assert code == 2 and path in net.output(), f"{what}: up exited {code}:\n{net.output()}"
            assert not os.path.exists(net.run_dir), f"{what}: up created {net.run_dir}"
            assert harness.processes_naming(net.run_dir) == [], f"{what}: up left processes running"


if __name__ == "__main__":
    harness.run_tests([test_validate_and_up_refuse_what_up_cannot_run])
