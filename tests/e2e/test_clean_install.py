"""``pip install hedgerow`` as a newcomer does it: a wheel of this tree in a fresh virtualenv
without the dev extra, used outside the repository.

* ``hedgerow demo`` finds its example functions in the package (no ``--examples DIR``);
* a Greengrass V1 function (``v1_forward``, from the installed package's examples) deploys
  and runs: ``greengrasssdk`` comes with Hedgerow, nothing is installed by hand.

The wheel and the virtualenv are built once per session (about 20 s).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.harness import REPO, running_system, wait_until

pytestmark = pytest.mark.slow

#: what the copy of the tree for the build leaves out
NOT_SOURCE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".demo",
    ".hypothesis",
)


@dataclass(frozen=True)
class Installed:
    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def site_packages(self) -> Path:
        [path] = (self.venv / "lib").glob("python3*/site-packages")
        return path


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("clean-install")
    tree = root / "src-tree"
    shutil.copytree(REPO, tree, symlinks=True, ignore=NOT_SOURCE)
    dist = root / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(tree)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = dist.glob("hedgerow-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    yield Installed(venv)


def test_the_install_is_the_wheel_without_dev_extras(installed: Installed, tmp_path: Path) -> None:
    probe = subprocess.run(
        [installed.python, "-c",
         "import hedgerow, greengrasssdk, importlib.util as u;"
         "print(hedgerow.__file__); print(u.find_spec('pytest') is None)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=True,
    )  # fmt: skip
    where, no_pytest = probe.stdout.split()
    assert Path(where).is_relative_to(installed.site_packages)
    assert no_pytest == "True"


def test_demo_runs_anywhere_after_pip_install(installed: Installed, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ports = [free_port() for _ in range(4)]
    done = subprocess.run(
        [str(installed.venv / "bin" / "hedgerow"), "demo", "--duration", "20",
         "--interval", "0.5",
         "--api-port", str(ports[0]), "--device-port", str(ports[1]),
         "--mqtt-port", str(ports[2]), "--core-port", str(ports[3])],
        capture_output=True, text=True, timeout=240, cwd=elsewhere, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"console http://127.0.0.1:{ports[0]}/console/" in output
    assert f"local MQTT endpoint 127.0.0.1:{ports[3]}" in output
    lines = re.findall(r"sensor +([\d.]+) °C +cpu +([\d.]+) °C +-> corrected +([\d.]+) °C", output)
    assert len(lines) >= 3, output
    for raw, cpu, corrected in (tuple(map(float, t)) for t in lines):
        assert corrected == pytest.approx(raw - (cpu - raw) / 5, abs=0.02)
    found = re.search(r"(\d+) corrected readings reached the cloud", output)
    assert found and int(found.group(1)) >= 3, output


def test_a_v1_function_deploys_from_a_clean_install(installed: Installed, tmp_path: Path) -> None:
    v1_forward = installed.site_packages / "hedgerow/demo/examples/functions/v1_forward"
    with running_system(tmp_path, python=installed.python) as system:
        system.create_thing("bme680-9")
        system.function(
            "v1-forward", v1_forward, "v1_forward.function_handler",
            "--runtime", "greengrass-v1", "--pinned",
        )  # fmt: skip
        system.route("thing:bme680-9", "sensors/#", "function:v1-forward")
        system.route("function:v1-forward", "v1/#", "cloud")
        deployed = system.deploy(check=False)
        assert "Success" in deployed.stdout + deployed.stderr, deployed.stdout + deployed.stderr
        system.start(
            "thing",
            system.hedgerow(
                "thing", "run", *system.thing_args("bme680-9"), "-id", "bme680-9",
                "-t", "sensors/bme680-9", "--sensor", "sim", "--interval", "0.2",
                "--state-dir", str(system.root / "state"),
            ),
        )  # fmt: skip
        forwarded = wait_until(
            lambda: (p := system.payloads("v1/#")) and len(p) >= 2 and p,
            timeout=60,
            what="readings republished by the V1 function",
        )
        assert forwarded[0]["function"] == "v1-forward"
        assert forwarded[0]["subject"] == "sensors/bme680-9"
