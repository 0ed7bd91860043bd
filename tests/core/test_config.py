from __future__ import annotations

from pathlib import Path

import pytest

from hedgerow.core.config import load_config, parse_config
from hedgerow.core.errors import ConfigError

GOOD = """
[core]
name = "pi-1"
group = "factory-1"
[cloud]
https = "https://127.0.0.1:8443"
mqtt = "mqtts://127.0.0.1:8884"
[local]
host = "0.0.0.0"
port = 8883
hosts = []
"""


def test_bundle_config_parses_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(GOOD)
    c = load_config(tmp_path / "config.toml")
    assert (c.name, c.group) == ("pi-1", "factory-1")
    assert c.cloud.mqtt.port == 8884 and c.cloud.https_endpoint.host == "127.0.0.1"
    assert c.local.port == 8883 and c.local.hosts == ()
    assert c.data_dir == tmp_path
    assert c.spool_path == tmp_path / "spool.db"
    assert c.spool.overflow == "drop-oldest" and c.spool.fsync == "always"
    assert c.status.metrics_port == "auto"  # a free port, written to metrics.address
    assert c.metrics_address_file == tmp_path / "metrics.address"


def test_metrics_port_settings(tmp_path: Path) -> None:
    for value, port in (("0", 0), ("9108", 9108), ('"auto"', "auto")):
        c = parse_config(GOOD + f"[status]\nmetrics_port = {value}\n", default_data_dir=tmp_path)
        assert c.status.metrics_port == port
    with pytest.raises(ConfigError, match='use "auto", 0 \\(off\\) or a port number'):
        parse_config(GOOD + "[status]\nmetrics_port = 'x'\n", default_data_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[cloud]\nhttps='https://x'\nmqtt='mqtts://x'", "core"),
        (GOOD.replace('name = "pi-1"', ""), "core.name"),
        (GOOD.replace('https = "https://127.0.0.1:8443"', ""), "cloud.https"),
        (GOOD.replace("https://127.0.0.1:8443", "http://x"), "cloud.https"),
        (GOOD.replace("port = 8883", "port = 'x'"), "local.port"),
        (GOOD.replace("port = 8883", "port = 70000"), "local.port"),
        (GOOD + "[spool]\noverflow = 'drop-random'\n", "spool.overflow"),
        (GOOD + "[spool]\nfsync = 'sometimes'\n", "spool.fsync"),
        (GOOD.replace("hosts = []", "hosts = [1]"), "local.hosts"),
        ("[core\n", "config"),
        (GOOD + "[status]\nmetrics_port = 'nine'\n", "status.metrics_port"),
        (GOOD + "[status]\nmetrics_port = -1\n", "status.metrics_port"),
    ],
)
def test_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, default_data_dir=Path("/tmp"))
    assert e.value.field == field
    assert field in str(e.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")


def test_broker_budget_keys() -> None:
    c = parse_config(GOOD, default_data_dir=Path("/d"))
    assert c.broker.max_outbound_bytes == 4 * 1024 * 1024
    assert c.broker.max_total_outbound_bytes == 16 * 1024 * 1024
    assert c.broker.max_keepalive is None
    text = GOOD + (
        "[broker]\nmax_outbound_bytes = 65536\nmax_total_outbound_bytes = 1048576\n"
        "slow_client_timeout = 5\nmax_keepalive = 120\n"
    )
    c = parse_config(text, default_data_dir=Path("/d"))
    assert (c.broker.max_outbound_bytes, c.broker.max_total_outbound_bytes) == (65536, 1048576)
    assert (c.broker.slow_client_timeout, c.broker.max_keepalive) == (5.0, 120)
    with pytest.raises(ConfigError) as raised:
        parse_config(GOOD + "[broker]\nmax_outbound_bytes = 10\n", default_data_dir=Path("/d"))
    assert raised.value.field == "broker.max_outbound_bytes"


def test_an_external_broker_login_over_mqtt_311(tmp_path: Path) -> None:
    text = GOOD.replace('mqtt = "mqtts://127.0.0.1:8884"', 'mqtt = "mqtt://rabbit:1885"')
    text = text.replace(
        "[local]",
        'mqtt_protocol = "3.1.1"\nmqtt_username = "pi-1"\nmqtt_password = "s3cret"\n[local]',
    )
    c = parse_config(text, default_data_dir=tmp_path)
    assert (c.cloud.mqtt.host, c.cloud.mqtt.port, c.cloud.mqtt_tls) == ("rabbit", 1885, False)
    assert (c.cloud.mqtt_protocol, c.cloud.mqtt_username, c.cloud.mqtt_password) == (
        "3.1.1",
        "pi-1",
        "s3cret",
    )
    plain = parse_config(GOOD, default_data_dir=tmp_path)  # an older bundle: as before
    assert (plain.cloud.mqtt_tls, plain.cloud.mqtt_protocol, plain.cloud.mqtt_password) == (
        True,
        "5",
        None,
    )
    with pytest.raises(ConfigError) as bad:
        parse_config(text.replace('"3.1.1"', '"4"'), default_data_dir=tmp_path)
    assert bad.value.field == "cloud.mqtt_protocol"
