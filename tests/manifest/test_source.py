"""The YAML underneath: values exactly as yaml.safe_load gives them, lines through aliases, and hostile files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scalable.errors import ManifestSchemaError, ManifestValidationError
from scalable.manifest import ManifestWarning, load_manifest, parse_manifest

HEAD = "version: 1\nproject: {name: x}\n"


def test_a_key_given_twice_warns_and_the_last_wins(isolated: Path) -> None:
    """As in yaml.safe_load the later value is used; a W_DUPLICATE_KEY warning names the second key's line."""
    path = isolated / "scalable.yaml"
    text = HEAD + "targets:\n  local: {provider: local, max_workers: 1}\n  local: {provider: local, max_workers: 3}\n"
    path.write_text(text)
    with pytest.warns(
        ManifestWarning,
        match=rf"^{path}:5: W_DUPLICATE_KEY targets\.local: given twice in one mapping; the last one is used$",
    ):
        manifest = load_manifest(path)
    assert manifest.targets["local"].options == {"max_workers": 3}
    assert manifest.raw == yaml.safe_load(text)


def test_a_merge_key_override_is_not_a_duplicate() -> None:
    """Keys that override a << merge are not duplicates."""
    text = HEAD + "targets:\n  a: &a {provider: local, max_workers: 1}\n  b:\n    <<: *a\n    max_workers: 2\n"
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        manifest = parse_manifest(text)
    assert manifest.targets["b"].options == {"max_workers": 2}


def test_an_error_inside_an_alias_names_the_line_of_its_anchor() -> None:
    """A bad value reached through an alias is reported where it is written."""
    text = HEAD + "components:\n  a: &bad\n    memory: lots\n  b: *bad\n"
    with pytest.raises(ManifestValidationError) as info:
        parse_manifest(text)
    assert (info.value.code, info.value.line, info.value.key) == ("E_BAD_MEMORY", 5, "components.a.memory")


def test_an_alias_bomb_is_refused_at_once() -> None:
    """Ten levels of ten aliases (10^10 values once expanded) are refused, not expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = HEAD + "components:\n  c:\n    env:\n" + "".join(f"      {line}\n" for line in lines)
    with pytest.raises(
        ManifestSchemaError,
        match=r"E_MANIFEST_TOO_LARGE \(top level\): the manifest expands to more than 100000 values",
    ):
        parse_manifest(text)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("&a [*a]", id="list-in-itself"),
        pytest.param("&a {k: *a}", id="mapping-in-itself"),
        pytest.param("[" * 200 + "]" * 200, id="deep-nesting"),
        pytest.param("[" * 5000 + "]" * 5000, id="deeper-than-the-parser-recurses"),
    ],
)
def test_recursive_and_deep_documents_are_refused(value: str) -> None:
    """An alias inside itself, or nesting deeper than 64 levels, is E_MANIFEST_TOO_LARGE naming where."""
    with pytest.raises(ManifestSchemaError, match=r"E_MANIFEST_TOO_LARGE .*nests deeper than 64 levels"):
        parse_manifest(HEAD + "components:\n  c:\n    tags: " + value + "\n")


def test_yaml_types_pass_through_to_the_lock_as_in_scalable() -> None:
    """Values keep the types yaml.safe_load gives (yes is True, 1.0 a float, a bare date stays a date in raw)."""
    text = (
        HEAD
        + "targets:\n  l: {provider: local, processes: yes}\ncomponents:\n  c:\n    env: {RATE: 1.0, DAY: 2024-01-02}\n"
    )
    manifest = parse_manifest(text)
    assert manifest.raw == yaml.safe_load(text)
    assert manifest.targets["l"].options["processes"] is True
    assert manifest.components["c"].env == {"RATE": "1.0", "DAY": "2024-01-02"}
