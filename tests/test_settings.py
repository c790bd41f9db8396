"""One settings object: every variable read in one place, runtime data under one directory, the
README's table in step with the code."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from durable_agents.settings import Settings, SettingsError, settings
from durable_agents.vault import EnvVault, FileVault

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("payload_dir", "blob_dir", "vault_file", "vault_key_file", "codec_key_file")
# Variables read on purpose outside the settings: what a subprocess inherits (seed.py's git), and
# the host id that sandboxes/docker_sandbox.py still reads itself (the worker passes its own).
NOT_SETTINGS = {"sandboxes/seed.py"}  # passes the environment on to git (with its own changes)


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of this machine's settings: each test sets what it checks."""
    ours = {str(f.validation_alias) for f in Settings.model_fields.values()}
    for name in [k for k in os.environ if k in ours or k.startswith("DA_SECRET_")]:
        monkeypatch.delenv(name)


def test_runtime_data_lives_under_one_directory_that_defaults_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean(monkeypatch)
    monkeypatch.chdir(tmp_path)
    config = Settings()
    assert config.data_dir == tmp_path / ".data"
    assert {name: getattr(config, name).relative_to(config.data_dir).as_posix() for name in PATHS} == {
        "payload_dir": "payloads",
        "blob_dir": "blobs",
        "vault_file": "vault.json",
        "vault_key_file": "vault.key",
        "codec_key_file": "codec-keys.json",
    }
    # Tests (and callers) build their own and hand it on.
    assert FileVault(config=Settings(data_dir=tmp_path)).path == tmp_path / "vault.json"
    monkeypatch.setenv("DA_DATA_DIR", "elsewhere")
    assert Settings().blob_dir == tmp_path / "elsewhere" / "blobs"
    # The older variables still override their one path; an empty one counts as unset.
    monkeypatch.setenv("DA_BLOB_DIR", "/srv/blobs")
    monkeypatch.setenv("DA_VAULT_FILE", "/secrets/vault.json")
    monkeypatch.setenv("DA_PAYLOAD_DIR", "")
    config = Settings()
    assert (config.blob_dir, config.vault_file, config.vault_key_file) == (
        Path("/srv/blobs"),
        Path("/secrets/vault.json"),
        Path("/secrets/vault.key"),
    )
    assert config.payload_dir == tmp_path / "elsewhere" / "payloads"


def test_values_are_checked_once_and_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-very-secret")
    monkeypatch.setenv("DA_SECRET_GITHUB_TOKEN", "ghp-very-secret")
    monkeypatch.setenv("DA_METRICS_PORT", "0")
    monkeypatch.setenv("DA_ENCRYPT_HISTORY", "yes")
    config = Settings()
    assert "very-secret" not in repr(config) and "very-secret" not in str(config.model_dump())
    assert config.metrics_port is None and config.encrypt_history
    assert EnvVault(config).get("github-token") == "ghp-very-secret" and EnvVault(config).names() == ["github-token"]
    with pytest.raises(Exception, match="frozen"):
        config.temporal_address = "elsewhere:7233"  # type: ignore[misc]
    monkeypatch.setenv("SANDBOX_WARM_POOL", "plenty")
    settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="SANDBOX_WARM_POOL: Input should be a valid integer") as bad:
            settings()
        assert "very-secret" not in str(bad.value) and "plenty" not in str(bad.value)
    finally:
        monkeypatch.undo()
        settings.cache_clear()


def _variables_read_in(path: Path) -> list[str]:
    """`os.environ[...]`, `os.environ.get(...)` and `os.getenv(...)` in one file, as source text."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        text = ast.unparse(node) if isinstance(node, ast.Call | ast.Subscript) else ""
        if re.match(r"os\.(environ\.get|getenv)\(|os\.environ\[", text):
            found.append(text)
    return found


def test_the_product_reads_the_environment_only_through_the_settings() -> None:
    sources = [
        p for d in ("durable_agents", "workflows", "activities", "sandboxes", "live") for p in (ROOT / d).rglob("*.py")
    ]
    reads = {
        str(p.relative_to(ROOT)): found
        for p in sources
        if (found := _variables_read_in(p)) and str(p.relative_to(ROOT)) not in NOT_SETTINGS
    }
    assert reads == {}, reads


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Configuration", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    variables = {str(f.validation_alias) for f in Settings.model_fields.values()} - {"DA_SECRET_"}
    assert variables - documented == set(), "settings missing from the README's Configuration table"
    assert "DA_SECRET_<NAME>" in table
