"""The cloud's config.toml through the one loader (unknown keys, wrong types, old keys,
``hedgerow cloud serve`` showing them), and the core's config.toml the cloud writes into a
provisioning bundle, read by the core's loader."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest

from hedgerow.cloud import config as config_module
from hedgerow.cloud import core_bundle as bundle
from hedgerow.cloud.config import Listen
from hedgerow.cloud.errors import ConfigError
from hedgerow.core.config import load_config

from .conftest import Cloud

HEDGEROW = str(Path(sys.executable).parent / "hedgerow")


def error(tmp_path: Path, text: str) -> ConfigError:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        config_module.load(tmp_path)
    assert caught.value.message.startswith(f"{tmp_path / 'config.toml'}: ")
    return caught.value


def test_an_unknown_key_names_file_table_key_and_the_nearest(tmp_path: Path) -> None:
    e = error(tmp_path, "[api]\nhost = '127.0.0.1'\nprot = 8080\n")
    assert e.field == "api.prot" and '[api]; did you mean "port"?' in e.message
    e = error(tmp_path, "[telemetri]\nretention_days = 3\n")
    assert e.field == "telemetri" and "did you mean [telemetry]?" in e.message


def test_a_wrong_type_names_the_field_and_the_expected_type(tmp_path: Path) -> None:
    e = error(tmp_path, "[pki]\ngroup_ca_rotation_days = '7'\n")
    assert e.field == "pki.group_ca_rotation_days"
    assert 'expected an integer within 1..30, got "7" (a string)' in e.message
    e = error(tmp_path, "[cloud]\nhosts = 'cloud.example.com'\n")
    assert "cloud.hosts: expected a list of strings (non-empty)" in e.message


def test_old_keys_get_a_migration_message(tmp_path: Path) -> None:
    e = error(tmp_path, "[database]\nurl = 'postgresql://db/hedgerow'\n")
    assert "database: moved: write the database URL as [cloud] database" in e.message
    e = error(tmp_path, "[secrets]\nkek = 'c2VjcmV0'\n")
    assert "secrets.kek: renamed: write the keyring's path as [secrets] kek_file" in e.message


def test_what_save_writes_loads_back(tmp_path: Path) -> None:
    config = config_module.CloudConfig(
        tmp_path,
        database="postgresql://db/x",
        hosts=("a.example",),
        api=Listen("0.0.0.0", 9000),
        api_tls=False,
        retention_days=2.5,
        kek_file="/run/keyring.json",
        broker="mqtt://rabbit:1885",
        broker_protocol="3.1.1",
        broker_login="password",
        broker_ingest=False,
    )
    config_module.save(config)
    assert config_module.load(tmp_path) == config


@pytest.mark.parametrize("change", [{"broker_protocol": "4"}, {"broker_login": "token"}])
def test_broker_settings_are_checked(tmp_path: Path, change: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="use one of"):
        config_module.CloudConfig(tmp_path, **change)


def test_cloud_serve_shows_the_errors_plainly(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[api]\nport = 'eighty'\n[mqtt]\nbrokr = ''\n")
    done = subprocess.run(
        [HEDGEROW, "cloud", "serve", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"hedgerow: {tmp_path / 'config.toml'}: api.port: expected")
    assert 'mqtt.brokr: unknown key in [mqtt]; did you mean "broker"?' in done.stderr


async def test_the_bundle_config_loads_cleanly_in_the_core(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    made = await cloud.ok("POST", "/api/v1/cores", json={"name": "pi-1", "group": "factory-1"})
    files = bundle.read_bundle(base64.b64decode(made["bundle"]))
    (tmp_path / "config.toml").write_bytes(files[bundle.CONFIG])
    config = await asyncio.to_thread(load_config, tmp_path / "config.toml")
    assert (config.name, config.group) == ("pi-1", "factory-1")
    assert config.cloud.https_endpoint.port == cloud.device_port
    assert config.cloud.mqtt.port == cloud.mqtt_port
    assert config.local.port == 8883 and config.data_dir == tmp_path


def test_device_storm_settings_load_and_bad_ones_are_named(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[device]\nmax_pending = 32\npending_wait_s = 1.5\n"
        "discovery_cache_entries = 0\ndiscovery_cache_ttl_s = 5.0\n"
    )
    loaded = config_module.load(tmp_path)
    assert (loaded.device_max_pending, loaded.device_pending_wait_s) == (32, 1.5)
    assert (loaded.discovery_cache_entries, loaded.discovery_cache_ttl_s) == (0, 5.0)
    assert error(tmp_path, "[device]\nmax_pending = -1\n").field == "device.max_pending"
    assert error(tmp_path, "[device]\npending_wait_s = 0\n").field == "device.pending_wait_s"
    e = error(tmp_path, "[device]\ndiscovery_cache_ttl_s = -2.0\n")
    assert e.field == "device.discovery_cache_ttl_s"
