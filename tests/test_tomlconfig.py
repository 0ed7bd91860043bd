"""hedgerow.tomlconfig, the one loader of the cloud's and the core's config files (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hedgerow.tomlconfig import ConfigFileError, Moved, check, hint, load, parse, within


@dataclass(frozen=True, slots=True)
class Net:
    host: str = "0.0.0.0"
    port: int = field(default=8883, metadata=within(0, 65535))
    hosts: tuple[str, ...] = ()
    mode: Literal["drop", "disconnect"] = "drop"


@dataclass(frozen=True, slots=True)
class Who:
    name: str = field(metadata=check(lambda v: None if "/" not in v else "no '/' in a name"))
    path: Path | None = None
    ratio: float = field(default=0.5, metadata=within(0.0, 1.0))
    metrics: int | Literal["auto"] = field(default="auto", metadata=hint("or a port"))
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class File:
    who: Who
    net: Net = field(default_factory=Net)


MOVED = (Moved("who", "id", "renamed: write it as [who] name"), Moved("old", None, "dropped"))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse(text, File, file="/etc/x.toml", moved=MOVED)
    assert str(caught.value).startswith("/etc/x.toml: ")
    return [str(p) for p in caught.value.problems]


def test_a_good_file_fills_the_dataclasses() -> None:
    text = '[who]\nname = "a"\npath = "d/e"\nratio = 1\nmetrics = 9\n[net]\nhosts = ["h"]\n'
    got = parse(text, File, file="x.toml")
    assert got == File(Who("a", Path("d/e"), 1.0, 9), Net(hosts=("h",)))
    assert isinstance(got.who.ratio, float)
    assert parse('[who]\nname = "a"\n', File, file="x").net == Net()


def test_unknown_keys_and_tables_name_the_nearest() -> None:
    assert problems('[who]\nname = "a"\n[net]\nprot = 1\n') == [
        'net.prot: unknown key in [net]; did you mean "port"? (keys of [net]: host, port, '
        "hosts, mode)"
    ]
    (only,) = problems('[who]\nname = "a"\n[nte]\n')
    assert only.startswith("nte: unknown table [nte]; did you mean [net]?")
    (far,) = problems('[who]\nname = "a"\nzzz = 1\n')
    assert far.startswith("who.zzz: unknown key in [who] (keys of [who]: name, path")


def test_wrong_values_name_the_field_and_the_type() -> None:
    assert problems('[who]\nname = 1\n[net]\nport = "8883"\nhosts = [1]\nmode = "x"\n') == [
        "who.name: expected a string, got 1 (an integer)",
        'net.port: expected an integer within 0..65535, got "8883" (a string)',
        "net.hosts: expected a list of strings (non-empty), got a list",
        'net.mode: expected one of "drop", "disconnect", got "x" (a string)',
    ]
    assert problems('[who]\nname = "a"\nratio = 2\nverbose = "yes"\nmetrics = "x"\n') == [
        "who.ratio: 2.0 is out of range 0.0..1.0",
        'who.metrics: expected an integer or one of "auto", got "x" (a string): or a port',
        'who.verbose: expected true or false, got "yes" (a string)',
    ]
    assert problems('[who]\nname = "a/b"\n') == ["who.name: no '/' in a name"]
    assert problems("who = 3\n") == ["who: expected a table [who], got 3 (an integer)"]


def test_moved_keys_and_tables_say_what_to_write() -> None:
    assert problems('[who]\nid = "a"\n[old]\nx = 1\n') == [
        "old: dropped",
        "who.id: renamed: write it as [who] name",
        "who.name: missing: a required key",
    ]


def test_missing_required_tables_and_not_toml() -> None:
    assert problems("") == ["who: missing: a required table [who]"]
    (bad,) = problems("[who\n")
    assert bad.startswith("config: not valid TOML")


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="nope.toml: config: no config file here"):
        load(tmp_path / "nope.toml", File)
    (tmp_path / "c.toml").write_text('[who]\nname = "n"\nnmae = "m"\n')
    with pytest.raises(ConfigFileError) as caught:
        load(tmp_path / "c.toml", File)
    assert caught.value.file == str(tmp_path / "c.toml") and caught.value.field == "who.nmae"
    assert 'did you mean "name"?' in str(caught.value)
