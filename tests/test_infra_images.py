"""The images and skaffold.yaml, checked without a Docker engine (CI has none), and then built.

What can be known without building: base images pinned to exact versions, a non-root user in
every final image, every COPY source present and let through ``.dockerignore``, every entry
point a module of the packages its image contains (imports included), the pretrained model
baked where the final image looks for it, and a skaffold.yaml that validates against its schema
and builds exactly the images the manifests use.

What needs the images: ``infra/images/check.py`` builds them with podman and starts each as the
dev overlay runs it; :func:`test_the_images_build_start_and_stop` runs it in the ``images``
lane (``pytest -m images``; deselected by default, as it takes minutes).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from facerank.cli.main import build_parser
from tests.plugins.infra import (
    OVERLAYS,
    ROOT,
    SECRET_SCRIPTS,
    collectable,
    get,
    load_yaml,
    needs_kubectl,
    pods,
    rendered,
    with_value,
)
from tests.plugins.schemas import SCHEMAS

FIRST_PARTY = ("facerank", "functions", "training", "inference")
TARGETS = ("functions", "training", "inference")
APP = "/app"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            instruction, _, arguments = logical.strip().partition(" ")
            yield instruction.upper(), arguments.strip()
        logical = ""


@cache
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, ``FROM`` arguments resolved from the global ARGs."""
    args: dict[str, str] = {}
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction, arguments in dockerfile_instructions(
        (ROOT / "Dockerfile").read_text(encoding="utf-8")
    ):
        if instruction == "ARG" and current is None:
            name, _, default = arguments.partition("=")
            args[name] = default
        elif instruction == "FROM":
            image, _, name = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], arguments).partition(
                " AS "
            )
            current = result[name.strip()] = Stage(name.strip(), image.strip())
        else:
            assert current is not None, f"{instruction} before the first FROM"
            current.instructions.append((instruction, arguments))
    return result


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    stage = stages()[name]
    parents = chain(stage.base) if stage.base in stages() else []
    return [*parents, stage]


def copies(stage: Stage) -> Iterator[tuple[str | None, list[str], str]]:
    """(``--from`` stage or None, sources, destination) of each COPY."""
    for instruction, arguments in stage.instructions:
        if instruction == "COPY":
            words = shlex.split(arguments)
            origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            yield origin, paths[:-1], paths[-1]


def packages_of(target: str) -> set[str]:
    """The first-party packages a final image holds (COPY into /app)."""
    return {
        destination.removeprefix(APP + "/").strip("/")
        for stage in chain(target)
        for origin, _, destination in copies(stage)
        if origin is None and destination.startswith(APP + "/")
    }


def last(target: str, instruction: str) -> str:
    found = [a for s in chain(target) for i, a in s.instructions if i == instruction]
    assert found, f"{target} has no {instruction}"
    return found[-1]


def test_base_images_are_pinned_to_exact_versions() -> None:
    external = {s.base for s in stages().values() if s.base not in stages()}
    external |= {
        origin
        for stage in stages().values()
        for origin, _, _ in copies(stage)
        if origin is not None and origin not in stages()
    }
    assert external, "the Dockerfile starts from something"
    for image in external:
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+(-[\w.-]+)?$", image), image
        assert ":latest" not in image


def test_every_component_has_a_target_that_runs_as_non_root() -> None:
    for target in TARGETS:
        user = last(target, "USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit()
        assert int(uid) != 0, target
        assert not gid or int(gid) != 0
        assert last(target, "ENTRYPOINT") == '["python", "-m", "facerank.launch"]'
    assert module_file("facerank.launch", main=True), "the entry point's launcher exists"
    assert "facerank" in packages_of("runtime")


def dockerignore_allows(path: str) -> bool:
    """Docker's rules: patterns in order, the last that matches the path or one of its
    parent folders decides; ``!`` lets through what an earlier pattern excluded."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _glob(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return not excluded


def _glob(pattern: str) -> re.Pattern[str]:
    translated = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        translated += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return re.compile(translated)


def test_every_copy_source_exists_and_reaches_the_build_context() -> None:
    sources = [
        source
        for stage in stages().values()
        for origin, paths, _ in copies(stage)
        if origin is None
        for source in paths
    ]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            assert dockerignore_allows(file.relative_to(ROOT).as_posix()), file


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "tests/test_infra_images.py",
        ".git/config",
        "infra/overlays/dev/secrets/minio.env",
        "facerank/__pycache__/settings.cpython-311.pyc",
        "bench/results/x.json",
    ],
)
def test_the_build_context_leaves_out_everything_else(path: str) -> None:
    assert not dockerignore_allows(path)


def module_file(module: str, *, main: bool = False) -> Path | None:
    """The file ``import module`` loads (``python -m module`` runs, with ``main``), if any."""
    base = ROOT.joinpath(*module.split("."))
    package = base / ("__main__.py" if main else "__init__.py")
    for candidate in (package, base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def first_party_imports(path: Path) -> Iterator[str]:
    """Every first-party module ``path`` imports, at any depth of its code."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (c for c in candidates if c.split(".")[0] in FIRST_PARTY and module_file(c))


def import_closure(module: str) -> set[str]:
    """The first-party packages that running ``module`` can reach through imports."""
    seen: set[Path] = set()
    pending = [module_file(module, main=True)]
    while pending:
        path = pending.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        pending += [module_file(m) for m in first_party_imports(path)]
    return {p.relative_to(ROOT).parts[0] for p in seen}


def image_entry_points() -> Iterator[tuple[str, str]]:
    """(target, module) for the default CMD of each target and every manifest's container."""
    for target in TARGETS:
        yield target, shlex.split(last(target, "CMD").strip("[]").replace(",", " "))[0]
    for overlay in OVERLAYS:
        for pod in pods(collectable(overlay)):
            for container in pod.containers:
                image = str(container["image"])
                if image.startswith("facerank-"):
                    yield image.removeprefix("facerank-"), container["args"][0]


@needs_kubectl
@pytest.mark.parametrize(
    ("target", "module"), sorted(set(image_entry_points())), ids=lambda v: str(v)
)
def test_entry_points_run_from_what_their_image_holds(target: str, module: str) -> None:
    assert module_file(module, main=True), f"python -m {module}: no such module in the tree"
    missing = import_closure(module) - packages_of(target)
    assert not missing, f"{module} imports {missing}, which image {target} lacks"


def test_the_pretrained_model_is_baked_where_the_images_look() -> None:
    model = stages()["model"]
    runs = [a for i, a in model.instructions if i == "RUN"]
    assert any("facerank.cli.main models fetch" in run for run in runs)
    fetch = build_parser().parse_args(["models", "fetch", "--no-progress"])
    assert fetch.handler.__name__ == "run_fetch", "the command the build runs exists"
    envs = " ".join(a for s in chain("inference") for i, a in s.instructions if i == "ENV")
    cache_dir = re.search(r"FACERANK_CACHE_DIR=(\S+)", envs)
    assert cache_dir is not None
    fetched = re.search(
        r"FACERANK_CACHE_DIR=(\S+)", " ".join(a for i, a in model.instructions if i == "ENV")
    )
    assert fetched is not None
    assert fetched[1] == cache_dir[1] == "/opt/facerank/cache"
    assert ("model", [cache_dir[1]], cache_dir[1]) in list(copies(stages()["runtime"]))
    assert "npm" not in " ".join(a for s in chain("inference") for _, a in s.instructions)


# --- skaffold.yaml --------------------------------------------------------------------------


@cache
def skaffold() -> dict[str, Any]:
    return load_yaml(ROOT / "skaffold.yaml")


def skaffold_schema_file() -> Path:
    return SCHEMAS / f"skaffold_{skaffold()['apiVersion'].removeprefix('skaffold/')}.json"


def skaffold_problems(config: dict[str, Any]) -> list[str]:
    """Validation against ``definitions/SkaffoldConfig`` (the root anyOf reports poorly)."""
    schema = load_yaml(skaffold_schema_file())  # JSON is YAML
    schema.pop("anyOf")
    schema["$ref"] = "#/definitions/SkaffoldConfig"
    return [
        f"{error.json_path}: {error.message[:200]}"
        for error in Draft7Validator(schema).iter_errors(config)
    ]


def test_skaffold_yaml_validates_against_its_schema() -> None:
    assert skaffold()["apiVersion"].startswith("skaffold/v4beta")
    assert skaffold_problems(skaffold()) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("build.artifacts.0.dockr", {}),
        ("portForward.0.localport", 1),
        ("manifests.kustomise", {}),
        ("profiles.0.build.local.push", "yes"),
    ],
)
def test_the_skaffold_check_rejects_typos(path: str, value: Any) -> None:
    assert skaffold_problems(with_value(skaffold(), path, value))


def test_every_artifact_builds_a_dockerfile_target() -> None:
    artifacts = skaffold()["build"]["artifacts"]
    for artifact in artifacts:
        docker = artifact["docker"]
        assert (ROOT / artifact.get("context", ".") / docker["dockerfile"]).is_file()
        assert docker["target"] in TARGETS
        assert artifact["image"] == f"facerank-{docker['target']}"
    assert sorted(a["docker"]["target"] for a in artifacts) == sorted(TARGETS)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_built_by_skaffold_or_pinned(overlay: str) -> None:
    built = {artifact["image"] for artifact in skaffold()["build"]["artifacts"]}
    used = set()
    for pod in pods(rendered(overlay)):
        for container in pod.containers:
            image = str(container["image"])
            if image in built:
                used.add(image)
            else:
                assert re.search(r"(@sha256:[0-9a-f]{64}|:[^:/]*\d+[^:/]*)$", image), image
                assert not image.endswith(":latest")
    assert used == built, "every artifact is deployed"


def test_skaffold_renders_the_overlays_and_sets_every_image() -> None:
    config = skaffold()
    assert config["manifests"]["kustomize"]["paths"] == ["infra/overlays/dev"]
    (prod,) = (p for p in config["profiles"] if p["name"] == "prod")
    assert prod["manifests"]["kustomize"]["paths"] == ["infra/overlays/prod"]
    assert {"op": "remove", "path": "/manifests/hooks"} in prod["patches"]
    (hook,) = config["manifests"]["hooks"]["before"]
    assert hook["host"]["command"][-1] == f"infra/{SECRET_SCRIPTS['dev']}"
    allowed = {entry["groupKind"] for entry in config["resourceSelector"]["allow"]}
    assert allowed == {"PodTemplate", "InferenceService.serving.kserve.io"}
    assert {p["name"] for p in config["profiles"]} >= {"prod", "kind", "minikube"}


@needs_kubectl
def test_port_forwards_reach_the_predictor_web_and_minio() -> None:
    documents = rendered("dev")
    forwards = {f["localPort"]: f for f in skaffold()["portForward"]}
    assert set(forwards) == {8080, 8081, 8083, 9000}
    for forward in forwards.values():
        assert forward["resourceType"] == "service"
        service = get(documents, "Service", forward["resourceName"], "")
        assert forward["namespace"] == service["metadata"]["namespace"]
        assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}
    # REST and gRPC of the predictor, on this machine's ports as under `facerank up`.
    assert forwards[8080]["resourceName"] == forwards[8083]["resourceName"]
    assert forwards[8083]["resourceName"] == "facerank-predictor-direct"


def test_the_readme_deploy_section_names_real_files() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Deploy to a cluster") :]
    paths = set(re.findall(r"\binfra/[\w./<>-]+[\w>]", section))
    assert len(paths) >= 5
    for path in paths:
        for overlay in OVERLAYS if "<overlay>" in path else ("",):
            real = ROOT / path.replace("<overlay>", overlay)
            if real.suffix == ".env":  # git-ignored: made from the example the hook copies
                real = real.with_name(real.name + ".example")
            assert real.exists(), path
    assert "skaffold dev" in section


# --- the images, built and started (the images lane) ------------------------------------------


@pytest.mark.images
@pytest.mark.timeout(3600)
@needs_kubectl
def test_the_images_build_start_and_stop(tmp_path: Path) -> None:
    """All three targets build; each image starts as its manifest says, answers its probe and
    stops within 5 s of SIGTERM; the worker refuses a missing TF_CONFIG (see the script).
    ``FACERANK_IMAGES_CHECK_ARGS`` passes options such as ``--pull=never``."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (Debian: apt-get install podman)")
    results = tmp_path / "results.json"
    options = shlex.split(os.environ.get("FACERANK_IMAGES_CHECK_ARGS", ""))
    run = subprocess.run(
        [sys.executable, str(ROOT / "infra/images/check.py"), "--results", str(results), *options],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=3500,
        check=False,
    )
    print(run.stdout)  # the build times, sizes and timings, shown with -s or -rP
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-4000:]
    summary = json.loads(results.read_text(encoding="utf-8"))
    if "--skip-build" not in options:
        assert set(summary["builds"]) == set(TARGETS)
    checked = {c["check"].split(":")[0] for c in summary["checks"]}
    ours = [
        container
        for pod in pods(rendered("dev"))
        for container in pod.spec["containers"]
        if str(container["image"]).startswith("facerank-")
    ]
    assert len(checked) == len(ours), checked  # every workload of ours was started
    assert all(c["ok"] for c in summary["checks"])
