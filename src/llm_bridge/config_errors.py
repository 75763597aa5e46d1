"""Config validation against config/schema.yaml, with errors a person can act on: one sentence per problem
naming the key's full path, the config file it came from, what is allowed, and a did-you-mean for near misses
("sft.learning_rate in my.yaml is not a setting; did you mean sft.lr?"), instead of jsonschema's dump."""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from llm_bridge.errors import InputError


def validate(config: dict, schema_path: Path, sources: list[Path], cli_config: dict | None = None) -> None:
    """Raise InputError listing every schema violation of `config`. `sources` are the config files in the order
    Snakemake merged them (the embedded default first, then each --configfile); `cli_config` is --config's."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    files = [(Path(p), _load(p)) for p in sources]
    lines = [describe(err, schema, files, cli_config or {}) for err in errors]
    raise InputError("the configuration is not valid:\n  " + "\n  ".join(dict.fromkeys(lines)))


def _load(path: Path) -> dict:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def describe(err: ValidationError, schema: dict, files: list[tuple[Path, dict]], cli_config: dict) -> str:
    """One sentence for one violation."""
    path = [str(p) for p in err.absolute_path]
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        sentences = []
        for key in extra:
            full = ".".join(path + [key])
            close = near_miss(key, allowed, err.schema)
            hint = f"did you mean {'.'.join(path + close)}?" if close else f"allowed here: {', '.join(allowed)}"
            sentences.append(f"{full} in {origin(path + [key], files, cli_config)} is not a setting; {hint}")
        return "\n  ".join(sentences)
    if err.validator == "required":
        missing = err.message.split("'")[1]
        full = ".".join(path + [missing])
        return f"{full} is missing (every config must set it; see config/config.yaml for its default)"
    full = ".".join(path) or "(top level)"
    if err.validator == "pattern":
        return (f"{full} in {origin(path, files, cli_config)} is {err.instance!r}, which does not match the allowed "
                f"form {err.validator_value}" + description(schema, path))
    return (f"{full} in {origin(path, files, cli_config)} is {err.instance!r}, but it must be {allowed_values(err)}"
            + description(schema, path))


def near_miss(key: str, allowed: list[str], schema: dict) -> list[str]:
    """The setting a mistyped key most likely meant, as a key path: a close spelling (difflib), an
    abbreviation by initials (learning_rate -> lr), or a section and key run together (sft_lr -> sft.lr)."""
    for section in allowed:
        sub = schema.get("properties", {}).get(section, {}).get("properties", {})
        if key.startswith(section + "_") and sub:
            rest = near_miss(key[len(section) + 1:], sorted(sub), schema["properties"][section])
            if rest:
                return [section, *rest]
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return close
    initials = "".join(part[0] for part in key.split("_") if part)
    return [initials] if len(initials) > 1 and initials in allowed else []


def allowed_values(err: ValidationError) -> str:
    rule, value, sub = err.validator, err.validator_value, err.schema
    if rule == "enum":
        return "one of " + ", ".join(map(str, value))
    if rule == "type":
        kind = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true or false",
                "object": "a mapping of keys", "array": "a list"}.get(value, str(value))
        bounds = [f"> {sub['exclusiveMinimum']}" if "exclusiveMinimum" in sub else "", f">= {sub['minimum']}" if "minimum" in sub else ""]
        return " ".join([kind, *filter(None, bounds)])
    if rule == "minimum":
        return f"at least {value}"
    if rule == "exclusiveMinimum":
        return f"greater than {value}"
    if rule == "maximum":
        return f"at most {value}"
    return err.message


def description(schema: dict, path: list[str]) -> str:
    """The schema's description of the key, where it has one: says what the value is for."""
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key)
        if not isinstance(node, dict):
            return ""
    text = node.get("description")
    return f" ({text})" if text else ""


def origin(path: list[str], files: list[tuple[Path, dict]], cli_config: dict) -> str:
    """Where the value of `path` was set: --config, else the last config file that sets it (a later
    --configfile overrides an earlier one)."""
    if _lookup(cli_config, path):
        return "--config"
    for name, data in reversed(files):
        if _lookup(data, path):
            return shown(name)
    return shown(files[0][0]) if files else "the config"


def shown(path: Path) -> str:
    """A config file as the user named it: relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _lookup(data, path: list[str]) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True
