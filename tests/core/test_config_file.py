"""The core's config.toml through the one loader: unknown keys, wrong types, old keys,
and what ``hedgerow core check`` prints about them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hedgerow.core.config import load_config, parse_config
from hedgerow.core.errors import ConfigError

from .test_config import GOOD

HEDGEROW = str(Path(sys.executable).parent / "hedgerow")


def error(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value


def test_an_unknown_key_names_file_table_key_and_the_nearest(tmp_path: Path) -> None:
    e = error(tmp_path, GOOD.replace("port = 8883", "prot = 8883"))
    assert e.field == "local.prot"
    assert '[local]; did you mean "port"?' in str(e)
    e = error(tmp_path, GOOD + "[spoool]\nfsync = 'normal'\n")
    assert e.field == "spoool" and "did you mean [spool]?" in str(e)


def test_a_wrong_type_names_the_field_and_the_expected_type(tmp_path: Path) -> None:
    e = error(tmp_path, GOOD.replace("port = 8883", 'port = "8883"'))
    assert e.field == "local.port"
    assert 'expected an integer within 0..65535, got "8883" (a string)' in str(e)
    e = error(tmp_path, GOOD + "[connector]\nbackoff_cap = true\n")
    assert "connector.backoff_cap: expected a number within 0.01.., got true" in str(e)


def test_old_keys_get_a_migration_message(tmp_path: Path) -> None:
    e = error(tmp_path, GOOD.replace('name = "pi-1"', 'thing_name = "pi-1"'))
    assert "core.thing_name: renamed: write the core's name as [core] name" in str(e)
    assert "core.name: missing" in str(e)  # every problem at once
    e = error(
        tmp_path,
        GOOD.replace("[local]", "[local]\n").replace(
            "[cloud]", '[cloud]\nca_path = "/greengrass/certs/root.ca.pem"'
        ),
    )
    assert "cloud.ca_path: dropped: the core reads root-ca.pem" in str(e)


def test_every_key_the_core_readme_shows_is_accepted(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "src/hedgerow/core/README.md").read_text()
    block = readme.split("```toml", 1)[1].split("```", 1)[0]
    config = parse_config(GOOD.split("[local]")[0] + block, default_data_dir=tmp_path)
    assert config.local.deny_policy == "drop" and config.spool.max_bytes == 67108864


def test_core_check_shows_the_errors_plainly(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.replace("port = 8883", "prot = 8883") + "[status]\nmetrics_port = 'x'\n")
    done = subprocess.run(
        [HEDGEROW, "core", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"hedgerow: {path}: local.prot: unknown key in [local]")
    assert 'status.metrics_port: expected an integer within 0..65535 or one of "auto"' in (
        done.stderr
    )
    assert done.stderr.count(str(path)) == 1
