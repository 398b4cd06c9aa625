"""The one image, checked without Docker: its base, its user, and that what it copies in is
enough for `pip install .` to install every function the manifests run."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

from tests.k8s.manifests import ROOT, local_apps

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def copied_sources() -> list[str]:
    """The build-context paths of every COPY line (the last word of each is the destination)."""
    sources = []
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, re.M):
        sources += [w for w in line.split()[:-1] if not w.startswith("--")]
    return sources


def test_the_base_image_is_python_3_11_slim_pinned_by_digest():
    # A tag can be moved to another image; a digest names one. The build argument is only there so
    # that a build without Docker Hub can name a stand-in; by default it is the pinned image.
    assert re.findall(r"^FROM\s+(.+)$", DOCKERFILE, re.M) == ["${PYTHON_IMAGE}"]
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert default, "the Dockerfile's base has no default"
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", default[1]), default[1]


def test_the_image_installs_the_locked_dependencies_then_the_shop_alone():
    # With their hashes, then the shop without its dependencies: nothing is resolved at build.
    install = r"^RUN pip install --require-hashes -r requirements\.lock && pip install --no-deps \."
    assert re.search(install, DOCKERFILE, re.M)


def test_the_lock_pins_every_dependency_with_its_hashes():
    lock = (ROOT / "requirements.lock").read_text()
    # name==version, maybe an environment marker (`uvloop==0.23.0 ; sys_platform != "win32"`), then `\`
    pinned = {name.lower().replace("_", "-"): version
              for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)(?: ;[^\\\n]*)? \\$", lock, re.M)}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not in requirements.lock: regenerate it (see its header)"
        assert Requirement(requirement).specifier.contains(pinned[name]), f"{name} {pinned[name]} breaks {requirement}"
    # Every pinned distribution carries at least one hash (pip refuses the lock otherwise).
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_runs_as_a_numeric_non_root_user():
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)[-1]
    assert all(part.isdigit() and int(part) != 0 for part in user.split(":")), user


def test_dockerignore_lets_in_what_the_dockerfile_copies():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert "*" in lines, ".dockerignore should exclude everything not named"
    assert set(copied_sources()) <= allowed


def test_the_copied_files_install_every_function(tmp_path):
    context = tmp_path / "context"
    for source in copied_sources():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(src, context / source)
    # Built as `pip install .` in the image builds it: setuptools from pyproject's build-system.
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheel_dir, context],
        check=True,
        cwd=tmp_path,
    )
    names = zipfile.ZipFile(next(Path(wheel_dir).glob("*.whl"))).namelist()
    for app in local_apps():
        assert f"functions/{app}/app.py" in names, app
    assert any(n.startswith("functions/notifications/templates/") for n in names), "mail templates"
