"""The documented gRPC examples (docs/grpc.md) run against a gateway serving the demo data.

The grpcurl commands run as written when grpcurl is installed; without it (it has no
Debian or PyPI package) each command is carried out the way grpcurl does it: the method
and its message types are found through server reflection, the `-d` JSON is parsed into
the reflected request type, and the call is made by name.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from documents import fenced_after
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

ROOT = Path(__file__).resolve().parent.parent
SHOWN_ADDRESS = "127.0.0.1:50051"


@pytest.fixture
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with run_gateway(simulator, grpc=True) as running:
        yield running


def grpcurl_by_reflection(args: list[str]) -> Any:
    """What `grpcurl -plaintext [-d JSON] ADDRESS (list | SERVICE/METHOD)` prints, as JSON."""
    assert args[:2] == ["grpcurl", "-plaintext"], args
    rest = args[2:]
    body = "{}"
    if rest[0] == "-d":
        body, rest = rest[1], rest[2:]
    address, target = rest
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if target == "list":
            return list(database.get_services())
        service_name, method_name = target.split("/")
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        response = call(json_format.Parse(body, request_type()), timeout=30)
        return json_format.MessageToDict(response)


async def run_grpcurl(args: list[str]) -> Any:
    if shutil.which("grpcurl") is None:
        return await asyncio.to_thread(grpcurl_by_reflection, args)
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    text = out.decode()
    return text.split() if args[-1] == "list" else json.loads(text)


async def test_readme_grpcurl_commands(gw: RunningGateway) -> None:
    block = fenced_after("needs no proto file", "sh")
    commands = [
        shlex.split(line.replace(SHOWN_ADDRESS, gw.grpc_address))
        for line in block.splitlines()
        if line.strip()
    ]
    listed, listing, page = [await run_grpcurl(command) for command in commands]
    assert {"listing.v1.ListingStatusService", "grpc.health.v1.Health"} <= set(listed)
    assert listing["state"].startswith("PUBLICATION_STATE_")
    assert {portal["provider"] for portal in listing["portals"]} == {
        "PROVIDER_CLASSIFIEDS_V3",
        "PROVIDER_LEGACY",
    }
    assert listing["legacy"]["adId"] == "659593"  # int64 travels as a JSON string
    assert len(page["statuses"]) == 2 and page["nextPageToken"]


async def test_readme_python_client(gw: RunningGateway) -> None:
    code = fenced_after("From Python", "python").replace(SHOWN_ADDRESS, gw.grpc_address)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    state, raw_status = out.decode().split()
    assert state.startswith("PUBLICATION_STATE_") and state != "PUBLICATION_STATE_UNSPECIFIED"
    assert raw_status
