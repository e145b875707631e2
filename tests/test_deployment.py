"""The deployment files work as written: each checked as close to running it as this machine
allows (no Docker daemon, no cluster, no systemd as PID 1).

The compose file is validated against the Compose specification (check-jsonschema's
vendored schema), the manifests against Kubernetes' (kubernetes-validate), the unit with
``systemd-analyze verify`` and by starting its ExecStart; the Dockerfile's build inputs
must be pinned. The validators are dev dependencies: missing, they skip locally and fail
under ``CI=true``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from syncd.config import parse_config
from tests.test_daemon import REPO, config_toml, free_port, subprocess_env, wait_until
from tests.test_health import get

DEPLOY = REPO / "examples" / "deployment"
DIGEST = re.compile(r"^[\w.\-/]+:[\w.\-]+@sha256:[0-9a-f]{64}$")


def _missing(what: str) -> None:
    message = f"{what} is not installed (a dev dependency: pip install -e '.[dev]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        _missing("PyYAML")
    return yaml


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        _missing(name)
    assert found is not None
    return found


# -- Dockerfile and the dependency lock ----------------------------------------------------


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_the_dockerfile_pins_its_base_image_by_digest_and_installs_a_hashed_lock() -> None:
    lines = _dockerfile()
    args = dict(
        line.split(None, 1)[1].split("=", 1)
        for line in lines
        if line.startswith("ARG ") and "=" in line
    )
    for line in (line for line in lines if line.startswith("FROM ")):
        image = line.split()[1]
        image = args.get(image.strip("${}"), image) if image.startswith("$") else image
        assert DIGEST.match(image), f"base image not pinned by digest: {line}"
    installs = [line for line in lines if "pip install" in line]
    assert any("--require-hashes" in line and "requirements.lock" in line for line in installs), (
        installs
    )
    assert all("--no-deps" in line or "--require-hashes" in line for line in installs), installs
    copied = [
        line.split()[1] for line in lines if line.startswith("COPY ") and "--from" not in line
    ]
    ignored = (REPO / ".dockerignore").read_text()
    for source in copied:
        assert (REPO / source).exists(), source
        if source.startswith("examples/"):
            assert f"!{source}" in ignored  # sent to the build despite `examples`


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck_and_writable_volumes() -> None:
    lines = _dockerfile()
    [user] = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user.split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") and "healthcheck" in line for line in lines)
    env = " ".join(line for line in lines if line.startswith("ENV "))
    tmpdir = re.search(r"TMPDIR=(\S+)", env)
    assert tmpdir is not None, "TMPDIR must point at a volume (read-only root filesystem)"
    [volumes] = [line for line in lines if line.startswith("VOLUME ")]
    assert "/data" in volumes and tmpdir.group(1) in volumes
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def _lock() -> dict[str, tuple[str, list[str]]]:
    found: dict[str, tuple[str, list[str]]] = {}
    text = (DEPLOY / "requirements.lock").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            spec, *hashes = line.split("--hash=")
            name, version = spec.strip().split("==")
            found[name.lower().replace("_", "-")] = (version, [h.strip() for h in hashes])
    return found


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_runtime_dependency_with_hashes_at_the_tested_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = _lock()
    wanted = [*project["dependencies"], *project["optional-dependencies"]["postgres"]]
    wanted += project["optional-dependencies"]["mysql"]
    wanted += project["optional-dependencies"]["rabbitmq"]
    for requirement in wanted:
        assert _name(requirement) in lock, f"{requirement} is not in requirements.lock"
    for name, (version, hashes) in lock.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a platform-specific wheel this machine doesn't need
        assert installed == version, (
            f"{name}: the lock says {version}, the tests run {installed}; "
            "run scripts/lock-requirements.sh"
        )


def _build_lock() -> dict[str, tuple[str, list[str]]]:
    found: dict[str, tuple[str, list[str]]] = {}
    text = (DEPLOY / "build-requirements.lock").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            spec, *hashes = line.split("--hash=")
            name, version = spec.strip().split("==")
            found[name.lower().replace("_", "-")] = (version, [h.strip() for h in hashes])
    return found


def _requires(name: str) -> list[str]:
    """The distributions ``name`` needs on this Python (extras and other markers left out)."""
    from packaging.requirements import Requirement

    needed = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            needed.append(_name(requirement.name))
    return needed


def test_the_build_backend_is_locked_with_hashes_and_the_wheel_built_without_isolation() -> None:
    lines = _dockerfile()
    build_lock = _build_lock()
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    seen, todo = set(), [_name(r) for r in wanted]
    while todo:  # every build requirement and what it needs, at the versions tested
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in build_lock, f"{name} is not in build-requirements.lock"
        version, hashes = build_lock[name]
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
        assert importlib.metadata.version(name) == version, (
            f"{name}: build-requirements.lock says {version}, the tests build with "
            f"{importlib.metadata.version(name)}; run scripts/lock-requirements.sh"
        )
        todo.extend(_requires(name))
    installs = [line for line in lines if "pip install" in line]
    assert any(
        "--require-hashes" in line and "build-requirements.lock" in line for line in installs
    ), installs
    builds = [line for line in lines if re.search(r"pip\S* wheel|pip\S* install \S*\.", line)]
    assert builds, "the Dockerfile builds no wheel"
    for line in builds:
        assert "--no-build-isolation" in line, f"the build fetches its backend unpinned: {line}"


def test_the_image_installs_syncd_compiled_to_bytecode() -> None:
    lines = _dockerfile()
    installs = [line for line in lines if "pip install" in line]
    assert installs and not any("--no-compile" in line for line in installs), installs
    assert any("cache_from_source" in line for line in lines), "the build checks no bytecode"


# -- compose ---------------------------------------------------------------------------------


def _deploy_config(environ: dict[str, str]) -> Any:
    raw = tomllib.loads((DEPLOY / "config.toml").read_text())
    return parse_config(raw, environ=environ)


def test_the_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    tool = _tool("check-jsonschema")
    compose = DEPLOY / "compose.yaml"
    ok = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", compose],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "compose.yaml"  # the validator does refuse a wrong file
    broken.write_text(compose.read_text().replace("stop_grace_period:", "stop_grace_periode:"))
    refused = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", broken], capture_output=True, timeout=60
    )
    assert refused.returncode != 0


def test_the_compose_file_runs_two_read_only_replicas_on_postgresql_with_what_syncd_needs() -> None:
    compose = _yaml().safe_load((DEPLOY / "compose.yaml").read_text())
    syncd = compose["services"]["syncd"]
    assert syncd["deploy"]["replicas"] == 2
    assert syncd["read_only"] is True
    assert syncd["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = syncd["environment"]
    config = _deploy_config({k: "x" for k in env} | {"SYNCD_STATE_URL": "postgresql://h/db"})
    assert config.state.url_env in env and env[config.state.url_env].startswith("postgresql")
    assert "@postgres:5432/" in env[config.state.url_env]
    for target in config.targets:
        assert target.api_key_env in env
    mounts = {m.split(":")[1]: m.split(":")[0] for m in syncd["volumes"] if isinstance(m, str)}
    assert mounts[env["SYNCD_CONFIG"]] == "./config.toml"
    catalog = Path(env["SYNCD_CONFIG"]).parent / config.source.path
    assert any(catalog.is_relative_to(target) for target in mounts), catalog
    assert any(m.get("target") == "/tmp/syncd" for m in syncd["volumes"] if isinstance(m, dict))
    for port in syncd["ports"]:
        assert port.startswith("127.0.0.1:") and port.endswith(f":{config.health.port}")


def test_every_compose_image_is_pinned_by_digest() -> None:
    compose = _yaml().safe_load((DEPLOY / "compose.yaml").read_text())
    pulled = {name: s["image"] for name, s in compose["services"].items() if "build" not in s}
    assert pulled, "no image pulled"
    for name, image in pulled.items():
        assert DIGEST.match(image), f"{name}: image not pinned by digest: {image}"
    assert "imagetools inspect" in (DEPLOY / "compose.yaml").read_text()  # how to refresh


# -- Kubernetes ------------------------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    docs = _yaml().safe_load_all((DEPLOY / "kubernetes" / "syncd.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def test_the_kubernetes_manifests_validate_against_their_schemas() -> None:
    tool = _tool("kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", DEPLOY / "kubernetes" / "syncd.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_manifests()) >= {"Deployment", "Secret", "PersistentVolumeClaim", "ConfigMap"}


def test_the_kubernetes_probes_and_volumes_match_the_config_syncd_reads() -> None:
    found = _manifests()
    secret = found["Secret"]["stringData"]
    config = parse_config(
        tomllib.loads(found["ConfigMap"]["data"]["config.toml"]), environ=dict(secret)
    )
    pod = found["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert config.state.url_env in secret
    assert all(t.api_key_env in secret for t in config.targets)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    assert ports[live["port"]] == ports[ready["port"]] == config.health.port
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert Path(env["SYNCD_CONFIG"]).parent.as_posix() in mounts
    assert any(Path(config.source.path).is_relative_to(path) for path in mounts)
    assert env["TMPDIR"] in mounts and "/data" in mounts
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts["/catalog"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == found["PersistentVolumeClaim"]["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] > config.schedule.shutdown_grace_s


def test_the_kubernetes_image_claims_no_release_that_does_not_exist() -> None:
    [container] = _manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    tag = image.rsplit(":", 1)[1] if "@" not in image else None
    if tag is not None and re.fullmatch(r"v?\d+(\.\d+)*", tag):
        tags = subprocess.run(
            ["git", "tag", "--list"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.split()
        assert tag in tags or f"v{tag}" in tags, f"{image}: no release {tag} exists"
    else:  # a placeholder the README explains
        assert image in (REPO / "README.md").read_text(), image


def test_the_catalog_claim_is_read_only_and_its_comment_says_so() -> None:
    found = _manifests()
    assert found["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    [container] = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/catalog"]
    assert mount["readOnly"] is True
    header = (DEPLOY / "kubernetes" / "syncd.yaml").read_text().split("\n---", 1)[0]
    assert "writes to" not in header.replace("never writes to it", "")


# -- systemd ---------------------------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "syncd.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    [exec_start] = _unit()["ExecStart"]
    binary = shlex.split(exec_start)[0]
    unit = tmp_path / "syncd.service"  # its binary where this machine has one
    stand_in = tmp_path / "bin" / "syncd"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit.write_text((DEPLOY / "syncd.service").read_text().replace(binary, str(stand_in)))
    result = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ignoring" not in result.stderr and "Unknown" not in result.stderr, result.stderr


def test_the_systemd_unit_puts_the_example_config_s_state_under_its_state_directory() -> None:
    unit = _unit()
    assert "strict" in unit["ProtectSystem"]
    environ = dict(assignment.split("=", 1) for assignment in unit["Environment"])
    raw = tomllib.loads((DEPLOY / "config.toml").read_text())
    keys = {t["api_key_env"]: "x" for t in raw["targets"]}
    config_dir = Path(environ["SYNCD_CONFIG"]).parent
    config = parse_config(raw, environ={**environ, **keys}, base_dir=config_dir)
    url = config.state.resolved_url({**environ, **keys})
    assert url.startswith("sqlite:////"), f"not an absolute SQLite path: {url}"
    database = Path(url.removeprefix("sqlite:///"))
    [state_directory] = unit["StateDirectory"]
    assert database.is_relative_to(Path("/var/lib") / state_directory), database
    assert not database.is_relative_to(config_dir)
    text = (DEPLOY / "syncd.service").read_text()
    assert "absolute" in text.lower() and "StateDirectory" in text


def test_the_systemd_units_exec_start_runs_the_daemon_and_stops_on_its_kill_signal(
    tmp_path: Path,
) -> None:
    unit = _unit()
    command = shlex.split(unit["ExecStart"][0])
    assert command[0] == "/opt/syncd/bin/syncd"
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text('{"id": "p1", "name": "One"}\n')
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            catalog=catalog,
            state_url=f"sqlite:///{tmp_path / 'state.db'}",
            userflux_url="http://127.0.0.1:9",
            schedule={"cron": "0 3 * * *"},
            health={"host": "127.0.0.1", "port": port},
        )
    )
    env = subprocess_env()
    for assignment in unit["Environment"]:
        key, value = assignment.split("=", 1)
        env[key] = value
    assert env["SYNCD_CONFIG"] == "/etc/syncd/config.toml"
    env["SYNCD_CONFIG"] = str(config)  # where this test keeps it
    env["TMPDIR"] = str(tmp_path)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", *command[1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until("/healthz", lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=20)
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        daemon.send_signal(getattr(signal, unit["KillSignal"][0]))
        assert daemon.wait(timeout=float(unit["TimeoutStopSec"][0])) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


# -- the README's docker run line ----------------------------------------------------------


def _readme_docker_run() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running it in a container", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    [line] = [line for line in block.splitlines() if line.strip().startswith("docker run")]
    return shlex.split(line)


def test_the_readme_docker_run_line_mounts_what_the_config_needs() -> None:
    words = _readme_docker_run()
    assert "--read-only" in words
    flags = list(itertools.pairwise(words))
    mounts = dict(value.split(":")[1::-1][:2] for flag, value in flags if flag == "-v")
    env = {value for flag, value in flags if flag == "-e"}
    ports = [value for flag, value in flags if flag == "-p"]
    lines = _dockerfile()
    image_env = " ".join(line for line in lines if line.startswith("ENV "))
    config_path = re.search(r"SYNCD_CONFIG=(\S+)", image_env)
    tmpdir = re.search(r"TMPDIR=(\S+)", image_env)
    assert config_path is not None and tmpdir is not None
    assert config_path.group(1) in mounts and tmpdir.group(1) in mounts and "/data" in mounts
    host_config = mounts[config_path.group(1)]
    assert host_config.endswith(".toml")
    # the config it mounts is config.example.toml adapted as the README says: its source
    # file beside it, and the API keys of every target passed in
    example = parse_config(
        tomllib.loads((REPO / "config.example.toml").read_text()),
        environ={"USERFLUX_API_KEY": "x", "VAMBE_API_KEY": "x"},
    )
    catalog = Path(config_path.group(1)).parent / example.source.path
    assert catalog.as_posix() in mounts, f"the catalog {catalog} is not mounted"
    assert {t.api_key_env for t in example.targets if t.enabled} <= env
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert all(p.endswith(f":{example.health.port}") for p in ports)


# -- versions --------------------------------------------------------------------------------


def _wheel_version(repo: Path, tmp_path: Path) -> tuple[str, str]:
    """Build the wheel of ``repo``: its file name's version and ``syncd --version`` from it."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(repo),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("syncd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    printed = subprocess.run(
        [sys.executable, "-m", "syncd", "--version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return wheel.name.split("-")[1], printed.strip()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.slow
def test_the_version_comes_from_the_git_tag_and_syncd_version_prints_it(tmp_path: Path) -> None:
    if importlib.util.find_spec("hatch_vcs") is None:
        _missing("hatch-vcs")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-tags", str(REPO), str(clone)], check=True, timeout=60
    )
    sha = _git(clone, "rev-parse", "--short", "HEAD")
    untagged, printed = _wheel_version(clone, tmp_path / "untagged")
    assert ".dev" in untagged and f"g{sha}" in untagged  # CI clones without tags
    assert printed == f"syncd, version {untagged.replace('_', '+')}"

    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "v1.4.2", "-m", "r")
    tagged, printed = _wheel_version(clone, tmp_path / "tagged")
    assert tagged == "1.4.2" and printed == "syncd, version 1.4.2"


def test_the_changelog_keeps_unreleased_on_top_and_a_section_per_release_tag() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert sections[0] == "Unreleased"
    for heading in sections[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+ — \d{4}-\d{2}-\d{2}", heading), heading
    tags = _git(REPO, "tag", "--list", "v*").split()
    released = {heading.split()[0] for heading in sections[1:]}
    assert {tag.removeprefix("v") for tag in tags} <= released
