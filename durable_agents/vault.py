"""The credential vault: secrets by name, resolved only inside trusted activities.

Agent files name secrets (`secret: github-token`); they never hold values. A value is looked up
here, in the process that needs it (the harness worker for MCP servers, the sandbox worker for
git clones and the egress proxy), for the one call that uses it. It is never an activity's input
or output, so it never enters workflow history; it is never logged; it never enters a sandbox.

Backends, tried in the order DA_VAULT names them (default `file,env`):
- `file`: an encrypted file (DA_VAULT_FILE, default vault.json in the data directory). Each value is
  sealed with AES-256-GCM under a key kept beside it (DA_VAULT_KEY_FILE, default vault.key, mode 0600) or
  given as DA_VAULT_KEY (base64); the secret's name is the associated data, so a value cannot be
  moved to another name. `da vault set NAME` (value on stdin), `vault list`, `vault delete`.
- `env`: DA_SECRET_<NAME> (upper case, non-alphanumerics as `_`), e.g. DA_SECRET_GITHUB_TOKEN.
- an external vault: `module:factory`, a callable returning an object with `get(name) -> str | None`
  and `names() -> list[str]` (the `Vault` protocol), e.g. a HashiCorp Vault or AWS client.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from durable_agents.errors import UserError
from durable_agents.settings import SECRET_PREFIX, Settings, settings

SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class VaultError(UserError):
    """A secret could not be resolved, or the vault is misconfigured. The message names what."""


@runtime_checkable
class Vault(Protocol):
    def get(self, name: str) -> str | None: ...

    def names(self) -> list[str]: ...


def check_name(name: str) -> str:
    if not SECRET_NAME.match(name):
        raise VaultError(f"{name!r} is not a secret name (letters, digits, '.', '_', '-'; up to 128)")
    return name


class EnvVault:
    """DA_SECRET_<NAME> environment variables (through the settings: the given ones, or this
    process's as they are when a secret is asked for)."""

    PREFIX = SECRET_PREFIX

    def __init__(self, config: Settings | None = None) -> None:
        self._config = config

    @classmethod
    def variable(cls, name: str) -> str:
        return cls.PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()

    def get(self, name: str) -> str | None:
        return (self._config or settings()).secret(self.variable(name))

    def names(self) -> list[str]:
        variables = (self._config or settings()).env_secrets
        return sorted(k.removeprefix(self.PREFIX).lower().replace("_", "-") for k in variables)


class FileVault:
    """An encrypted JSON file: {"version": 1, "secrets": {name: base64(nonce + ciphertext)}}."""

    def __init__(
        self, path: Path | str | None = None, key_file: Path | str | None = None, config: Settings | None = None
    ) -> None:
        config = config or settings()
        self.path = Path(path) if path else config.vault_file
        if key_file:
            self.key_file = Path(key_file)
        elif path and "vault_key_file" not in config.model_fields_set:  # DA_VAULT_KEY_FILE unset: beside the file
            self.key_file = self.path.with_suffix(".key")
        else:
            self.key_file = config.vault_key_file
        self._given_key = config.vault_key

    def _key(self, create: bool) -> bytes | None:
        if self._given_key is not None:
            return _decode_key(self._given_key.get_secret_value(), "DA_VAULT_KEY")
        if self.key_file.exists():
            return _decode_key(self.key_file.read_text().strip(), str(self.key_file))
        if not create:
            return None
        key = AESGCM.generate_key(bit_length=256)
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
        return key

    def _sealed(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return dict(data["secrets"])
        except (ValueError, KeyError, TypeError) as e:
            raise VaultError(f"vault file {self.path} is not a vault ({e})") from None

    def get(self, name: str) -> str | None:
        sealed = self._sealed().get(name)
        if sealed is None:
            return None
        key = self._key(create=False)
        if key is None:
            raise VaultError(f"vault file {self.path} has {name!r} but its key is missing ({self.key_file})")
        blob = base64.b64decode(sealed)
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], name.encode()).decode()
        except Exception:
            raise VaultError(f"secret {name!r} in {self.path} does not decrypt with the vault key") from None

    def names(self) -> list[str]:
        return sorted(self._sealed())

    def set(self, name: str, value: str) -> None:
        check_name(name)
        if not value:
            raise VaultError(f"the value for {name!r} is empty")
        key = self._key(create=True)
        assert key is not None
        nonce = os.urandom(12)
        secrets = self._sealed()
        secrets[name] = base64.b64encode(nonce + AESGCM(key).encrypt(nonce, value.encode(), name.encode())).decode()
        self._write(secrets)

    def delete(self, name: str) -> bool:
        secrets = self._sealed()
        if secrets.pop(name, None) is None:
            return False
        self._write(secrets)
        return True

    def _write(self, secrets: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "secrets": secrets}, f, indent=1, sort_keys=True)
        tmp.replace(self.path)


def aes256_key(text: str, where: str, error: type[Exception]) -> bytes:
    """A base64 AES-256 key (the vault's, the codec's), or `error` saying what is wrong with it."""
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise error(f"{where} is not base64") from None
    if len(key) != 32:
        raise error(f"{where} must be 32 bytes (AES-256), not {len(key)}")
    return key


def _decode_key(text: str, where: str) -> bytes:
    return aes256_key(text, f"the vault key in {where}", VaultError)


class ChainVault:
    """Several backends: the first that has a name answers."""

    def __init__(self, backends: list[Vault]) -> None:
        self.backends = backends

    def get(self, name: str) -> str | None:
        for backend in self.backends:
            value = backend.get(name)
            if value:
                return value
        return None

    def names(self) -> list[str]:
        return sorted({n for b in self.backends for n in b.names()})

    def resolve(self, name: str) -> str:
        """The value of `name`, or a VaultError naming the secret and where it was looked for."""
        check_name(name)
        value = self.get(name)
        if value is None:
            where = ", ".join(_describe(b) for b in self.backends)
            raise VaultError(f"unknown secret {name!r} (looked in {where}; add it with `da vault set {name}`)")
        return value

    def missing(self, names: list[str]) -> list[str]:
        return [n for n in dict.fromkeys(names) if self.get(n) is None]


def _describe(backend: Vault) -> str:
    if isinstance(backend, FileVault):
        return f"the vault file {backend.path}"
    if isinstance(backend, EnvVault):
        return "DA_SECRET_* variables"
    return type(backend).__name__


def load_vault(spec: str | None = None, config: Settings | None = None) -> ChainVault:
    """The vault this process uses (DA_VAULT: comma-separated `file`, `env`, `module:factory`)."""
    spec = spec if spec is not None else (config or settings()).vault
    backends: list[Vault] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "file":
            backends.append(FileVault(config=config))
        elif part == "env":
            backends.append(EnvVault(config))
        elif ":" in part:
            module, _, factory = part.partition(":")
            try:
                backend = getattr(importlib.import_module(module), factory)()
            except (ImportError, AttributeError) as e:
                raise VaultError(f"DA_VAULT: cannot load external vault {part!r}: {e}") from None
            if not isinstance(backend, Vault):
                raise VaultError(f"DA_VAULT: {part!r} does not give an object with get(name) and names()")
            backends.append(backend)
        else:
            raise VaultError(f"DA_VAULT: unknown backend {part!r} (file, env, or module:factory)")
    if not backends:
        raise VaultError("DA_VAULT names no backend")
    return ChainVault(backends)
