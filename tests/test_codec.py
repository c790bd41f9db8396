"""Encrypted history: the AES-GCM codec, key rotation, the codec server, and workers without the key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from durable_agents import codec
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.payload_store import data_converter
from durable_agents.settings import Settings
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import CHAOS_NAMESPACE, DA, ROOT, TEMPORAL_CLI, add_scenario, free_port, wait_for

SECRET_TEXT = "the launch code is 0000-cobalt"  # appears in the task, a tool's output and the answer


def ring(*ids: str) -> codec.KeyRing:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return codec.KeyRing(ids[0], {i: AESGCM.generate_key(bit_length=256) for i in ids})


async def test_payloads_are_sealed_with_the_active_key_and_any_known_key_opens_them() -> None:
    old = codec.EncryptionCodec(ring("k1"))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(SECRET_TEXT).encode())
    [sealed] = await old.encode([plain])
    assert sealed.metadata["encoding"] == b"binary/encrypted" and sealed.metadata["encryption-key-id"] == b"k1"
    assert b"cobalt" not in sealed.SerializeToString()
    assert await old.decode([sealed]) == [plain]

    rotated = codec.EncryptionCodec(old.ring.rotated())  # a new active key; k1 still opens old payloads
    assert rotated.ring.active != "k1" and await rotated.decode([sealed]) == [plain]
    [resealed] = await rotated.encode([plain])
    assert resealed.metadata["encryption-key-id"] == rotated.ring.active.encode()
    with pytest.raises(codec.CodecKeyError, match=f"codec key '{rotated.ring.active}', which this process does not"):
        await old.decode([resealed])

    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(codec.CodecKeyError, match="does not decrypt"):
        await old.decode([tampered])
    assert await old.decode([plain]) == [plain], "payloads written before encryption still read"


def test_keys_are_checked_when_loaded(tmp_path: Path) -> None:
    config = Settings(codec_key_file=tmp_path / "keys.json", codec_keys=None)
    with pytest.raises(codec.CodecKeyError, match="has no codec keys"):
        codec.KeyRing.load(config)
    (tmp_path / "keys.json").write_text(json.dumps({"active": "k9", "keys": {"k1": "AAAA"}}))
    with pytest.raises(codec.CodecKeyError, match="must be 32 bytes"):
        codec.KeyRing.load(config)
    with pytest.raises(codec.CodecKeyError, match="expected ID:BASE64KEY"):
        codec.KeyRing.load(config.model_copy(update={"codec_keys": SecretStr("k1")}))
    (tmp_path / "keys.json").unlink()
    first = codec.new_key_file(config.codec_key_file)
    second = codec.new_key_file(config.codec_key_file)
    assert set(second.keys) == {first.active, second.active} and codec.KeyRing.load(config) == second
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"


def _payload_texts(history_json: str) -> str:
    """Every payload's data in a `temporal workflow show -o json` output, base64-decoded."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(found)


def _keys_env(path: Path) -> dict[str, str]:
    return {"DA_ENCRYPT_HISTORY": "1", "DA_CODEC_KEY_FILE": str(path)}


async def _wait_started(log: Path) -> None:
    async def started() -> bool:
        return b"worker started" in log.read_bytes()

    await wait_for(started, within_s=60, what=f"the worker to start ({log})")


async def test_an_encrypted_session_reads_as_ciphertext_unless_through_the_codec_server(
    address: str,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    keys = tmp_path / "codec-keys.json"
    codec.new_key_file(keys)
    worker_processes(env=_keys_env(keys))
    await _wait_started(tmp_path / "worker-0.log")

    sealed = data_converter(Settings(encrypt_history=True, codec_key_file=keys, codec_keys=None))
    sealed_client = await Client.connect(address, namespace=CHAOS_NAMESPACE, data_converter=sealed)
    plain_client = await Client.connect(address, namespace=CHAOS_NAMESPACE, data_converter=pydantic_data_converter)
    marker = add_scenario(
        scripted,
        [Step(tool_use=ToolUse(name="bash", input={"command": f"echo '{SECRET_TEXT}'"})), Step(text=SECRET_TEXT)],
    )
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    handle = await start_agent_session(sealed_client, agent, f"Say: {SECRET_TEXT} {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == SECRET_TEXT

    raw = (await plain_client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert "cobalt" not in raw, "the history the server holds must be ciphertext"
    assert "binary/encrypted" in raw or "YmluYXJ5L2VuY3J5cHRlZA==" in raw

    # The CLI shows ciphertext, and plaintext through the codec server; the browser UI may call it (CORS).
    port = free_port()
    env = {**os.environ, "DA_CODEC_KEY_FILE": str(keys)}
    server = subprocess.Popen(  # noqa: ASYNC220 - a server for the test, stopped below
        [str(DA), "codec-server", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def up() -> bool:
                try:
                    await http.options(f"http://127.0.0.1:{port}/decode")
                    return True
                except httpx.TransportError:
                    return False

            await wait_for(up, within_s=30, what="the codec server")
            preflight = await http.options(
                f"http://127.0.0.1:{port}/decode",
                headers={
                    "Origin": "http://localhost:8233",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
            assert preflight.headers.get("access-control-allow-origin") == "http://localhost:8233"
            bad = await http.post(f"http://127.0.0.1:{port}/decode", content=b"not json")
            assert bad.status_code == 400 and "not Payloads JSON" in bad.json()["error"]

        def show(*extra: str) -> str:
            done = subprocess.run(
                [str(TEMPORAL_CLI), "workflow", "show", "--address", address, "--namespace", CHAOS_NAMESPACE]
                + ["--workflow-id", handle.id, "--output", "json", *extra],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert "cobalt" not in _payload_texts(await asyncio.to_thread(show))
        decoded = _payload_texts(await asyncio.to_thread(show, "--codec-endpoint", f"http://127.0.0.1:{port}"))
        assert SECRET_TEXT in decoded
    finally:
        server.terminate()
        server.wait(10)


async def test_a_worker_without_the_key_is_a_clear_error_not_a_stuck_session(
    address: str,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    # Encryption on and no keys at all: the worker refuses to start, saying why.
    missing = worker_processes(env=_keys_env(tmp_path / "nowhere.json"))
    assert missing.wait(60) == 2
    assert b"has no codec keys" in (tmp_path / "worker-0.log").read_bytes()

    # A worker holding only k1 while clients moved on to a rotated key: `start` says so and ends it.
    keys = tmp_path / "codec-keys.json"
    env = {**os.environ, **_keys_env(keys), "TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": CHAOS_NAMESPACE}
    first = codec.new_key_file(keys)
    worker_processes(env=_keys_env(keys))
    await _wait_started(tmp_path / "worker-1.log")
    rotated = codec.new_key_file(keys)
    marker = add_scenario(scripted, [Step(text="never")])
    done = await asyncio.to_thread(
        subprocess.run,
        [str(DA), "start", "--agent", "agents/coder.yaml", f"Hi {marker}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    session_id = done.stdout.strip()
    assert f"codec key '{rotated.active}', which this process does not hold (it has: {first.active})" in done.stderr
    assert "could not start and was ended" in done.stderr
    client = await Client.connect(address, namespace=CHAOS_NAMESPACE, data_converter=pydantic_data_converter)
    description = await client.get_workflow_handle(session_id).describe()
    assert description.status is not None and description.status.name == "TERMINATED"
