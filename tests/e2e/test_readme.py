"""The README opens with the two commands a fresh machine needs, and CI runs
the second one exactly as written there."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def test_ci_runs_the_readme_test_command():
    root = os.path.abspath(harness.SOURCE_DIR)
    readme = open(os.path.join(root, "README.md")).read()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert len(blocks) >= 2, "the README should open with two sh blocks"
    up, tests = blocks[0].strip(), blocks[1].strip()
    assert "\n" not in up and "\n" not in tests, "each is one copy-pasteable line"
    assert up.endswith("mailnet up scenarios/starwars.json"), up
    assert "install-deps.sh" in up and "install-deps.sh" in tests
    ci = open(os.path.join(root, ".ci", "run")).read()
    assert tests in ci.splitlines(), f".ci/run does not run {tests!r}"
    for script in re.findall(r"\./(scripts/[\w.-]+)", up + " " + tests):
        assert os.access(os.path.join(root, script), os.X_OK), f"{script} is not executable"


if __name__ == "__main__":
    harness.run_tests([test_ci_runs_the_readme_test_command])
