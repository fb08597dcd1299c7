"""Reading LocalContainer runner entities and registry credentials: units, defaults and clear errors."""

from __future__ import annotations

import base64
import json

import pytest

from plugins.container import parse_cpu, parse_memory
from plugins.container.engine import parse_auths
from plugins.container.spec import DEFAULT_RESULT_PATH, parse_spec


@pytest.mark.parametrize(
    ("value", "nanos"),
    [(1, 1_000_000_000), (0.5, 500_000_000), ("1.5", 1_500_000_000), ("500m", 500_000_000), ("2", 2 * 10**9)],
)
def test_cpu_is_cpus_or_millicores(value: object, nanos: int) -> None:
    assert parse_cpu(value) == nanos


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1Gi", 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1.5Gi", 3 * 1024**3 // 2),
        ("500M", 500 * 1000**2),
        ("2G", 2 * 1000**3),
        (1, 1024**3),
        (0.5, 1024**3 // 2),
        ("2", 2 * 1024**3),
        ("10000000b", 10_000_000),
    ],
)
def test_memory_takes_units_and_a_bare_number_is_gib(value: object, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(
    ("parse", "value", "words"),
    [
        (parse_cpu, "-1", "more than 0"),
        (parse_cpu, "0", "more than 0"),
        (parse_cpu, "two", "is not a quantity"),
        (parse_cpu, "1Gi", "unknown unit"),
        (parse_cpu, "1m", "below"),
        (parse_cpu, True, "a number or a string"),
        (parse_memory, "lots", "is not a quantity"),
        (parse_memory, "1Qi", "unknown unit"),
        (parse_memory, "1Ki", "below the engine's minimum"),
        (parse_memory, "nan", "is not a quantity"),
        (parse_memory, [1], "a number or a string"),
    ],
)
def test_bad_resource_values_are_refused_naming_the_field(parse: object, value: object, words: str) -> None:
    assert callable(parse)
    with pytest.raises(ValueError, match=words) as caught:
        parse(value)
    assert "runner.computeResource." in str(caught.value)


def test_a_dm_job_container_entity_becomes_its_container() -> None:
    spec = parse_spec(
        {
            "image": {"registryName": "myreg.azurecr.io/", "imageName": "tools/sim", "version": "1.2"},
            "customCommand": "/code/init.sh --input-id='a b'",
            "computeResource": {"cpu": "0.5", "memory": "1Gi"},
            "name": "sim-1",
            "network": "dmss_default",
        }
    )
    assert spec.image == "myreg.azurecr.io/tools/sim:1.2" and spec.registry == "myreg.azurecr.io"
    assert spec.command == ["/code/init.sh", "--input-id=a b"]
    assert (spec.nano_cpus, spec.memory) == (500_000_000, 1024**3)
    assert (spec.name, spec.network, spec.result_path) == ("sim-1", "dmss_default", DEFAULT_RESULT_PATH)


def test_defaults_a_hub_image_and_the_configured_network() -> None:
    spec = parse_spec({"image": "busybox"}, default_network="jobs")
    assert (spec.image, spec.registry, spec.command) == ("busybox", None, None)
    assert (spec.nano_cpus, spec.memory, spec.name, spec.network) == (None, None, None, "jobs")
    assert parse_spec({"image": {"imageName": "library/busybox"}}).registry is None
    assert parse_spec({"image": "localhost/busybox:local"}).registry == "localhost"


@pytest.mark.parametrize(
    ("runner", "words"),
    [
        ({}, "runner.image"),
        ({"image": {"registryName": "x"}}, "runner.image"),
        ({"image": "a", "customCommand": 3}, "runner.customCommand"),
        ({"image": "a", "computeResource": "big"}, "runner.computeResource"),
        ({"image": "a", "name": "no spaces"}, "runner.name"),
        ({"image": "a", "network": 5}, "runner.network"),
        ({"image": "a", "resultPath": "out"}, "runner.resultPath"),
    ],
)
def test_bad_entities_are_refused_naming_the_field(runner: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_spec(runner)


def test_registry_credentials_in_either_shape() -> None:
    plain = {"reg.example.com": {"username": "u", "password": "p:w"}}
    assert parse_auths(json.dumps(plain)) == plain
    docker_config = {"auths": {"reg.example.com": {"auth": base64.b64encode(b"u:p:w").decode()}}}
    assert parse_auths(json.dumps(docker_config)) == plain
    assert parse_auths(None) == {} and parse_auths("") == {}
    for bad in ("{", "[]", '{"r": {"username": "u"}}'):
        with pytest.raises(ValueError, match="DM_JOBD_DOCKER_AUTH"):
            parse_auths(bad)
