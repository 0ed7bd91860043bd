"""Connector config validation: pure, and every error names its field."""

from __future__ import annotations

from typing import Any

import pytest

from hedgerow.connectors import ConnectorConfigError, spec_of, validate
from hedgerow.connectors.config import (
    ModbusConfig,
    OpcUaConfig,
    PublishMode,
    SecurityMode,
    SecurityPolicy,
    Table,
)
from hedgerow.connectors.modbus_codec import DataType, Order

TCP: dict[str, Any] = {
    "host": "10.0.0.5",
    "tags": [
        {
            "name": "power",
            "table": "holding_register",
            "address": 100,
            "type": "float32",
            "word_order": "little",
            "deadband": 0.5,
        },
        {"name": "running", "table": "coil", "address": 3, "publish": "every"},
    ],
}


def test_a_modbus_tcp_config_with_defaults() -> None:
    config = validate("modbus-tcp", "meter", TCP)
    assert isinstance(config, ModbusConfig)
    assert (config.host, config.port, config.timeout_s) == ("10.0.0.5", 502, 1.0)
    power, running = config.tags
    assert (power.table, power.type, power.word_order, power.count) == (
        Table.HOLDING_REGISTER,
        DataType.FLOAT32,
        Order.LITTLE,
        2,
    )
    assert (running.type, running.publish) == (DataType.BIT, PublishMode.EVERY)
    assert config.data_topic("power") == "connectors/meter/data/power"
    assert config.request_topic == "connectors/meter/request"
    assert config.response_topic == "connectors/meter/response"


def test_an_rtu_config() -> None:
    config = validate(
        "modbus-rtu",
        "bus",
        {
            "serial_port": "/dev/ttyUSB0",
            "baudrate": 9600,
            "parity": "E",
            "tags": TCP["tags"],
            "v1_adapter": True,
        },
    )
    assert isinstance(config, ModbusConfig)
    assert (config.serial_port, config.baudrate, config.parity, config.v1_adapter) == (
        "/dev/ttyUSB0",
        9600,
        "E",
        True,
    )


def _with_tag(**change: Any) -> dict[str, Any]:
    tag = {"name": "t", "table": "holding_register", "address": 1, **change}
    return {"host": "h", "tags": [tag]}


@pytest.mark.parametrize(
    ("kind", "raw", "field", "words"),
    [
        ("modbus-tcp", {"tags": TCP["tags"]}, "host", "required"),
        ("modbus-tcp", {"host": "h", "port": 70000, "tags": TCP["tags"]}, "port", "1..65535"),
        ("modbus-tcp", {"host": "h"}, "tags", "required"),
        ("modbus-tcp", {"host": "h", "tags": []}, "tags", "non-empty"),
        ("modbus-tcp", _with_tag(type="float128"), "tags[0].type", "not one of"),
        ("modbus-tcp", _with_tag(table="register"), "tags[0].table", "not one of"),
        ("modbus-tcp", _with_tag(address=-1), "tags[0].address", "0..65535"),
        ("modbus-tcp", _with_tag(address="40001"), "tags[0].address", "integer"),
        (
            "modbus-tcp",
            _with_tag(address=65535, type="float64"),
            "tags[0].address",
            "past register",
        ),
        ("modbus-tcp", _with_tag(byte_order="middle"), "tags[0].byte_order", "not one of"),
        ("modbus-tcp", _with_tag(deadband=-1), "tags[0].deadband", "negative"),
        ("modbus-tcp", _with_tag(interval_s=0), "tags[0].interval_s", "positive"),
        ("modbus-tcp", _with_tag(scale=0), "tags[0].scale", "not be 0"),
        ("modbus-tcp", _with_tag(length=4), "tags[0].length", "strings only"),
        ("modbus-tcp", _with_tag(table="coil", type="int16"), "tags[0].type", "holds a bit"),
        ("modbus-tcp", _with_tag(name="a/b"), "tags[0].name", "not a tag name"),
        ("modbus-tcp", _with_tag(adress=3), "tags[0].adress", "typo"),
        (
            "modbus-tcp",
            {"host": "h", "tags": [TCP["tags"][0], TCP["tags"][0]]},
            "tags[1].name",
            "twice",
        ),
        (
            "modbus-tcp",
            {"host": "h", "tags": TCP["tags"], "topic_prefix": "a/#"},
            "topic_prefix",
            "topic",
        ),
        ("modbus-rtu", {"tags": TCP["tags"]}, "serial_port", "required"),
        (
            "modbus-rtu",
            {"serial_port": "/dev/x", "parity": "X", "tags": TCP["tags"]},
            "parity",
            "N, E or O",
        ),
        ("opcua", {"nodes": [{"name": "a", "node_id": "i=1"}]}, "url", "required"),
        (
            "opcua",
            {"url": "http://x", "nodes": [{"name": "a", "node_id": "i=1"}]},
            "url",
            "opc.tcp://",
        ),
        (
            "opcua",
            {"url": "opc.tcp://x:4840", "nodes": [{"name": "a", "node_id": "Speed"}]},
            "nodes[0].node_id",
            "not a node id",
        ),
        (
            "opcua",
            {
                "url": "opc.tcp://x:4840",
                "security_policy": "Basic256Sha256",
                "nodes": [{"name": "a", "node_id": "i=1"}],
            },
            "certificate",
            "required",
        ),
        (
            "opcua",
            {
                "url": "opc.tcp://x:4840",
                "security_policy": "Basic128",
                "nodes": [{"name": "a", "node_id": "i=1"}],
            },
            "security_policy",
            "not one of",
        ),
        (
            "opcua",
            {
                "url": "opc.tcp://x:4840",
                "security_mode": "Sign",
                "nodes": [{"name": "a", "node_id": "i=1"}],
            },
            "security_mode",
            "does not go",
        ),
        (
            "opcua",
            {
                "url": "opc.tcp://x:4840",
                "password": "p",
                "nodes": [{"name": "a", "node_id": "i=1"}],
            },
            "username",
            "required",
        ),
        ("bacnet", {}, "kind", "unknown connector kind"),
    ],
)
def test_bad_configs_name_the_field(kind: str, raw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConnectorConfigError) as info:
        validate(kind, "c1", raw)
    assert info.value.field == field
    assert words in info.value.message
    assert str(info.value).startswith(f"{field}: ")


def test_a_bad_connector_name() -> None:
    with pytest.raises(ConnectorConfigError) as info:
        validate("opcua", "no spaces", {})
    assert info.value.field == "name"


def test_an_opcua_config() -> None:
    config = validate(
        "opcua",
        "press",
        {
            "url": "opc.tcp://10.0.0.9:4840",
            "security_policy": "Basic256Sha256",
            "certificate": "c.der",
            "private_key": "k.pem",
            "username": "u",
            "password": "p",
            "sampling_interval_ms": 50,
            "nodes": [
                {"name": "speed", "node_id": "ns=2;s=Speed", "deadband": 0.5},
                {"name": "temp", "node_id": "ns=2;i=7", "sampling_interval_ms": 500},
            ],
        },
    )
    assert isinstance(config, OpcUaConfig)
    assert config.security_mode is SecurityMode.SIGN_AND_ENCRYPT
    assert config.security_policy is SecurityPolicy.BASIC256SHA256
    assert [n.sampling_interval_ms for n in config.nodes] == [50, 500]
    assert config.nodes[0].deadband == 0.5


def test_spec_of_validates_and_records_the_version() -> None:
    spec = spec_of("modbus-tcp", "meter", TCP)
    assert (spec.kind, spec.name, spec.version) == ("modbus-tcp", "meter", 1)
    assert spec.from_json(spec.to_json()) == spec
    with pytest.raises(ConnectorConfigError):
        spec_of("modbus-tcp", "meter", {"tags": TCP["tags"]})
