"""The pinned dependency sets: every declared dependency pinned and hashed, and used.

A clean clone must install exactly what was tested (issue: a redis-py release
turned `mypy --strict` red overnight). pyproject.toml keeps ranges for people
who install the package; requirements/*.txt pin them, with hashes, and the
README's commands, .ci/run and the Dockerfile install from there.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
PINNED = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ;[^\\\n]*)? \\$", re.MULTILINE)


def pinned(lock: str) -> dict[str, str]:
    text = (REPO / "requirements" / lock).read_text()
    return {normal(name): version for name, version in PINNED.findall(text)}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    return {normal(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in specs}


# Both sets carry the `uvloop` extra: the README's install, the image and the
# tests all run the loop production runs.
@pytest.mark.parametrize(
    ("lock", "extras"), [("run.txt", ("uvloop",)), ("dev.txt", ("uvloop", "dev"))]
)
def test_every_declared_dependency_is_pinned_with_hashes(lock: str, extras: tuple[str]) -> None:
    versions = pinned(lock)
    assert declared(*extras) <= set(versions), "run requirements/refresh"
    assert {"setuptools", "wheel"} <= set(versions)  # the --no-build-isolation build
    text = (REPO / "requirements" / lock).read_text()
    requirements = re.split(r"^(?=[A-Za-z])", text, flags=re.MULTILINE)
    for requirement in filter(None, requirements):
        assert "--hash=sha256:" in requirement, requirement.splitlines()[0]


def test_the_dev_set_pins_the_run_set_at_the_same_versions() -> None:
    run, dev = pinned("run.txt"), pinned("dev.txt")
    assert {name: dev.get(name) for name in run} == run


def test_readme_ci_and_image_install_from_the_locks() -> None:
    readme = (REPO / "README.md").read_text()
    install = "--require-hashes -r requirements/{} && .venv/bin/pip install -q --no-deps"
    assert install.format("run.txt") in readme
    assert install.format("dev.txt") in readme
    [test_command] = [line for line in readme.splitlines() if "pytest" in line and "venv" in line]
    assert test_command in (REPO / ".ci" / "run").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/run.txt" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
