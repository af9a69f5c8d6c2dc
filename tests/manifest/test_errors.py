"""Every bad manifest gives one error naming file, line, Scalable's code and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable.errors import (
    ConfigError,
    ManifestError,
    ManifestNotFoundError,
    ManifestParseError,
    ManifestSchemaError,
    ManifestValidationError,
    TargetNotSupportedError,
)
from scalable.manifest import load_manifest, parse_manifest

P = ManifestParseError
S = ManifestSchemaError
V = ManifestValidationError
HEAD = "version: 1\nproject: {name: x}\n"


def case(text: str, code: str, line: int | None, key: str, cls: type[ManifestError], message: str, id: str) -> object:
    return pytest.param(text, code, line, key, cls, message, id=id)


BAD = [
    # --- the document ------------------------------------------------------------------------
    case("version: 1\nproject: {name: x\n", "E_YAML", 3, "(top level)", P, "malformed YAML", "yaml-unclosed-flow"),
    case("version: 1\n  project: x\n", "E_YAML", 2, "(top level)", P, "malformed YAML", "yaml-bad-indent"),
    case("version: 1\n---\nversion: 1\n", "E_YAML", 2, "(top level)", P, "malformed YAML", "yaml-two-documents"),
    case(
        "version: 1\nproject: !!python/object:os.system {}\n",
        "E_YAML",
        2,
        "(top level)",
        P,
        "malformed YAML",
        "yaml-python-tag",
    ),
    case("", "E_EMPTY_MANIFEST", None, "(top level)", S, "manifest document is empty", "empty"),
    case(
        "# only a comment\n", "E_EMPTY_MANIFEST", None, "(top level)", S, "manifest document is empty", "only-comment"
    ),
    case("- 1\n- 2\n", "E_BAD_TYPE", 1, "(top level)", S, "a manifest is a mapping", "list-document"),
    case(
        "version: 1\nproject:\n  name: ${PROJECT_NAME}\n",
        "E_UNSET_VARIABLE",
        3,
        "project.name",
        P,
        "environment variable PROJECT_NAME is not set",
        "unset-variable",
    ),
    case(
        HEAD + "overlays:\n  o:\n    project: {name: '${NOPE}'}\n",
        "E_UNSET_VARIABLE",
        5,
        "overlays.o.project.name",
        P,
        "NOPE is not set",
        "unset-variable-in-overlay",
    ),
    # --- top level ---------------------------------------------------------------------------
    case(
        HEAD + "extras: 1\nmore: 2\n",
        "E_UNKNOWN_KEY",
        3,
        "extras",
        S,
        "unknown top-level keys ['extras', 'more']; allowed: components, overlays, project, targets, tasks, version",
        "unknown-top-keys",
    ),
    case("project: {name: x}\n", "E_MISSING_KEY", 1, "version", S, "missing; add 'version: 1'", "missing-version"),
    case(
        "version: 1\n",
        "E_MISSING_KEY",
        1,
        "project",
        S,
        "missing; add 'project: {name: my-project}'",
        "missing-project",
    ),
    case(
        "version: true\nproject: {name: x}\n",
        "E_BAD_VERSION",
        1,
        "version",
        S,
        "version must be an integer, got bool True",
        "version-bool",
    ),
    case(
        "version: '1'\nproject: {name: x}\n",
        "E_BAD_VERSION",
        1,
        "version",
        S,
        "version must be an integer, got str '1'",
        "version-str",
    ),
    case(
        "project: {name: x}\nversion: 2\n",
        "E_BAD_VERSION",
        2,
        "version",
        S,
        "version 2 is not supported (expected 1)",
        "version-2",
    ),
    # --- project -----------------------------------------------------------------------------
    case(
        "version: 1\nproject:\n",
        "E_MISSING_KEY",
        2,
        "project.name",
        S,
        "missing; add 'name: my-project'",
        "project-null",
    ),
    case(
        "version: 1\nproject: [x]\n",
        "E_BAD_TYPE",
        2,
        "project",
        S,
        "'project' must be a mapping, got list",
        "project-list",
    ),
    case(
        "version: 1\nproject:\n  name: x\n  colour: red\n",
        "E_UNKNOWN_KEY",
        4,
        "project.colour",
        S,
        "unknown key 'colour'; allowed here: name, default_storage, local_cache",
        "project-unknown-key",
    ),
    case(
        "version: 1\nproject: {name: '  '}\n",
        "E_BAD_TYPE",
        2,
        "project.name",
        S,
        "must be a non-empty string",
        "project-name-blank",
    ),
    case(
        "version: 1\nproject:\n  name: 7\n",
        "E_BAD_TYPE",
        3,
        "project.name",
        S,
        "must be a non-empty string, got int 7",
        "project-name-int",
    ),
    case(
        "version: 1\nproject:\n  name: x\n  default_storage: 5\n",
        "E_BAD_TYPE",
        4,
        "project.default_storage",
        S,
        "must be a string, got int 5",
        "default-storage-int",
    ),
    case(
        "version: 1\nproject:\n  name: x\n  local_cache: [a]\n",
        "E_BAD_TYPE",
        4,
        "project.local_cache",
        S,
        "must be a string, got list",
        "local-cache-list",
    ),
    # --- targets -----------------------------------------------------------------------------
    case(
        HEAD + "targets: [local]\n",
        "E_BAD_TYPE",
        3,
        "targets",
        S,
        "'targets' must be a mapping, got list",
        "targets-list",
    ),
    case(
        HEAD + "targets:\n  1: {provider: local}\n",
        "E_BAD_TYPE",
        4,
        "targets['1']",
        S,
        "target names must be non-empty strings, got int 1",
        "target-name-int",
    ),
    case(
        HEAD + "targets:\n  t:\n",
        "E_MISSING_KEY",
        4,
        "targets.t.provider",
        S,
        "missing; use one of: local, dask, slurm, kubernetes, aws, gcp",
        "target-null",
    ),
    case(
        HEAD + "targets:\n  t: [local]\n",
        "E_BAD_TYPE",
        4,
        "targets.t",
        S,
        "'t' must be a mapping, got list",
        "target-list",
    ),
    case(
        HEAD + "targets:\n  t:\n    max_workers: 2\n",
        "E_MISSING_KEY",
        4,
        "targets.t.provider",
        S,
        "missing",
        "provider-missing",
    ),
    case(
        HEAD + "targets:\n  t:\n    provider: ''\n",
        "E_BAD_TYPE",
        5,
        "targets.t.provider",
        S,
        "must be a non-empty string",
        "provider-empty",
    ),
    case(
        HEAD + "targets:\n  t:\n    provider: 3\n",
        "E_BAD_TYPE",
        5,
        "targets.t.provider",
        S,
        "got int 3",
        "provider-int",
    ),
    case(
        HEAD + "targets:\n  t:\n    provider: local\n    5: x\n",
        "E_BAD_TYPE",
        6,
        "targets.t['5']",
        S,
        "option names must be strings, got int 5",
        "option-name-int",
    ),
    case(
        HEAD + "targets:\n  t:\n    provider: local\n    overlay: [a]\n",
        "E_BAD_TYPE",
        6,
        "targets.t.overlay",
        S,
        "overlay must be the name of an overlay",
        "overlay-ref-list",
    ),
    case(
        HEAD + "targets:\n  t:\n    provider: local\n    overlay: gpu\n",
        "E_UNKNOWN_OVERLAY",
        6,
        "targets.t.overlay",
        S,
        "overlay 'gpu' referenced but not defined; available overlays: []",
        "overlay-ref-undefined",
    ),
    # --- overlays ----------------------------------------------------------------------------
    case(
        HEAD + "overlays: [a]\n",
        "E_BAD_TYPE",
        3,
        "overlays",
        S,
        "'overlays' must be a mapping, got list",
        "overlays-list",
    ),
    case(
        HEAD + "overlays:\n  o: [a]\n",
        "E_BAD_TYPE",
        4,
        "overlays.o",
        S,
        "overlay 'o' must be a mapping, got list",
        "overlay-body-list",
    ),
    case(
        HEAD + "overlays:\n  o:\n    version: 2\n",
        "E_UNKNOWN_KEY",
        5,
        "overlays.o.version",
        S,
        "an overlay may set project, targets, components, tasks; it cannot set 'version'",
        "overlay-sets-version",
    ),
    # --- components --------------------------------------------------------------------------
    case(
        HEAD + "components: 5\n",
        "E_BAD_TYPE",
        3,
        "components",
        S,
        "'components' must be a mapping, got int",
        "components-int",
    ),
    case(
        HEAD + "components:\n  c: [a]\n",
        "E_BAD_TYPE",
        4,
        "components.c",
        S,
        "'c' must be a mapping, got list",
        "component-list",
    ),
    case(
        HEAD + "components:\n  c:\n    gpus: 1\n",
        "E_UNKNOWN_KEY",
        5,
        "components.c.gpus",
        S,
        "unknown key 'gpus'; allowed here: image, runtime, cpus, memory, mounts, env, tags, preload_script, description",
        "component-unknown-key",
    ),
    case(
        HEAD + "components:\n  c:\n    image: 5\n",
        "E_BAD_TYPE",
        5,
        "components.c.image",
        S,
        "must be a string, got int 5",
        "image-int",
    ),
    case(
        HEAD + "components:\n  c:\n    runtime: [docker]\n",
        "E_BAD_TYPE",
        5,
        "components.c.runtime",
        S,
        "must be a string, got list",
        "runtime-list",
    ),
    case(
        HEAD + "components:\n  c:\n    cpus: 0\n",
        "E_BAD_VALUE",
        5,
        "components.c.cpus",
        S,
        "must be a positive integer, got int 0",
        "cpus-zero",
    ),
    case(
        HEAD + "components:\n  c:\n    cpus: true\n",
        "E_BAD_VALUE",
        5,
        "components.c.cpus",
        S,
        "must be a positive integer, got bool True",
        "cpus-bool",
    ),
    case(
        HEAD + "components:\n  c:\n    cpus: '4'\n",
        "E_BAD_VALUE",
        5,
        "components.c.cpus",
        S,
        "must be a positive integer, got str '4'",
        "cpus-str",
    ),
    case(
        HEAD + "components:\n  c:\n    memory: 8\n",
        "E_BAD_TYPE",
        5,
        "components.c.memory",
        S,
        "must be a string such as '4GB', got int 8",
        "memory-int",
    ),
    case(
        HEAD + "components:\n  c:\n    mounts: [/data]\n",
        "E_BAD_TYPE",
        5,
        "components.c.mounts",
        S,
        "'mounts' must be a mapping, got list",
        "mounts-list",
    ),
    case(
        HEAD + "components:\n  c:\n    mounts:\n      /data: 5\n",
        "E_BAD_TYPE",
        6,
        "components.c.mounts['/data']",
        S,
        "'mounts' maps strings to strings",
        "mount-target-int",
    ),
    case(
        HEAD + "components:\n  c:\n    env: [A=1]\n",
        "E_BAD_TYPE",
        5,
        "components.c.env",
        S,
        "'env' must be a mapping, got list",
        "env-list",
    ),
    case(
        HEAD + "components:\n  c:\n    tags: model\n",
        "E_BAD_TYPE",
        5,
        "components.c.tags",
        S,
        "must be a list of strings, got 'model'",
        "tags-str",
    ),
    case(
        HEAD + "components:\n  c:\n    tags: [1]\n",
        "E_BAD_TYPE",
        5,
        "components.c.tags",
        S,
        "must be a list of strings, got [1]",
        "tags-int-item",
    ),
    case(
        HEAD + "components:\n  c:\n    preload_script: 5\n",
        "E_BAD_TYPE",
        5,
        "components.c.preload_script",
        S,
        "must be a string",
        "preload-int",
    ),
    # --- tasks -------------------------------------------------------------------------------
    case(HEAD + "tasks: [a]\n", "E_BAD_TYPE", 3, "tasks", S, "'tasks' must be a mapping, got list", "tasks-list"),
    case(
        HEAD + "tasks:\n  t:\n", "E_MISSING_KEY", 4, "tasks.t.component", S, "missing; name the component", "task-null"
    ),
    case(HEAD + "tasks:\n  t: [a]\n", "E_BAD_TYPE", 4, "tasks.t", S, "'t' must be a mapping, got list", "task-list"),
    case(
        HEAD + "tasks:\n  t: {component: c, retries: 3}\n",
        "E_UNKNOWN_KEY",
        4,
        "tasks.t.retries",
        S,
        "unknown key 'retries'; allowed here: component, cache, outputs, description",
        "task-unknown-key",
    ),
    case(
        HEAD + "tasks:\n  t:\n    component: ''\n",
        "E_BAD_TYPE",
        5,
        "tasks.t.component",
        S,
        "must be a non-empty string",
        "task-component-empty",
    ),
    case(
        HEAD + "components: {c: {}}\ntasks:\n  t:\n    component: c\n    cache: 'yes'\n",
        "E_BAD_TYPE",
        7,
        "tasks.t.cache",
        S,
        "must be true or false, got str 'yes'",
        "cache-str",
    ),
    case(
        HEAD + "components: {c: {}}\ntasks:\n  t:\n    component: c\n    cache: 1\n",
        "E_BAD_TYPE",
        7,
        "tasks.t.cache",
        S,
        "must be true or false, got int 1",
        "cache-int",
    ),
    case(
        HEAD + "components: {c: {}}\ntasks:\n  t:\n    component: c\n    outputs: [a]\n",
        "E_BAD_TYPE",
        7,
        "tasks.t.outputs",
        S,
        "'outputs' must be a mapping, got list",
        "outputs-list",
    ),
    # --- what the parts say together (Scalable's validate_manifest codes) --------------------
    case(
        HEAD + "targets:\n  k:\n    provider: k8s\n",
        "E_UNKNOWN_PROVIDER",
        5,
        "targets.k.provider",
        V,
        "unknown provider 'k8s'; use one of: local, dask, slurm, kubernetes, aws, gcp",
        "unknown-provider",
    ),
    case(
        HEAD + "targets:\n  k:\n    provider: Local\n",
        "E_UNKNOWN_PROVIDER",
        5,
        "targets.k.provider",
        V,
        "unknown provider 'Local'",
        "provider-case-matters",
    ),
    case(
        HEAD + "components:\n  c:\n    memory: lots\n",
        "E_BAD_MEMORY",
        5,
        "components.c.memory",
        V,
        "memory 'lots' is not a size",
        "memory-unparsable",
    ),
    case(
        HEAD + "components:\n  c:\n    memory: 0GB\n",
        "E_NONPOSITIVE_MEMORY",
        5,
        "components.c.memory",
        V,
        "memory '0GB' must be more than 0",
        "memory-zero",
    ),
    case(
        HEAD + "components:\n  c:\n    memory: -1GB\n",
        "E_NONPOSITIVE_MEMORY",
        5,
        "components.c.memory",
        V,
        "must be more than 0",
        "memory-negative",
    ),
    case(
        HEAD + "components:\n  c:\n    mounts:\n      data: /inputs\n",
        "E_RELATIVE_HOST_MOUNT",
        6,
        "components.c.mounts.data",
        V,
        "host path 'data' must be absolute",
        "relative-host-mount",
    ),
    case(
        HEAD + "components:\n  c:\n    mounts:\n      /data: inputs\n",
        "E_RELATIVE_CONTAINER_MOUNT",
        6,
        "components.c.mounts['/data']",
        V,
        "container path 'inputs' must be absolute",
        "relative-container-mount",
    ),
    case(
        HEAD + "components: {a: {}}\ntasks:\n  t: {component: b}\n",
        "E_UNKNOWN_COMPONENT",
        5,
        "tasks.t.component",
        V,
        "unknown component 'b'; known components: a",
        "unknown-component",
    ),
    case(
        HEAD + "tasks:\n  t: b\n",
        "E_UNKNOWN_COMPONENT",
        4,
        "tasks.t.component",
        V,
        "unknown component 'b'; known components: none defined",
        "unknown-component-short-form",
    ),
    # --- local provider ----------------------------------------------------------------------
    case(
        HEAD + "targets:\n  l:\n    provider: local\n    max_workers: 0\n",
        "E_BAD_MAX_WORKERS",
        6,
        "targets.l.max_workers",
        V,
        "max_workers must be a positive integer, got 0",
        "local-max-workers-zero",
    ),
    case(
        HEAD + "targets:\n  l:\n    provider: local\n    max_workers: two\n",
        "E_BAD_MAX_WORKERS",
        6,
        "targets.l.max_workers",
        V,
        "max_workers must be a positive integer, got 'two'",
        "local-max-workers-str",
    ),
    case(
        HEAD + "targets:\n  l:\n    provider: local\n    max_workers: true\n",
        "E_BAD_MAX_WORKERS",
        6,
        "targets.l.max_workers",
        V,
        "got True",
        "local-max-workers-bool",
    ),
    case(
        HEAD + "targets:\n  l:\n    provider: local\n    threads_per_worker: 0\n",
        "E_BAD_THREADS_PER_WORKER",
        6,
        "targets.l.threads_per_worker",
        V,
        "threads_per_worker must be a positive integer",
        "local-threads",
    ),
    case(
        HEAD + "targets:\n  l:\n    provider: local\n    processes: 'yes'\n",
        "E_BAD_PROCESSES_FLAG",
        6,
        "targets.l.processes",
        V,
        "processes must be a boolean, got 'yes'",
        "local-processes",
    ),
    case(
        HEAD + "targets:\n  l:\n    provider: local\n    containers: podman\n",
        "E_BAD_CONTAINERS_MODE",
        6,
        "targets.l.containers",
        V,
        "containers must be one of none, auto, docker, got 'podman'",
        "local-containers",
    ),
    # --- slurm provider ----------------------------------------------------------------------
    *[
        case(
            HEAD + f"targets:\n  hpc:\n    provider: slurm\n    comm_port: 1\n    {key}: 5\n",
            f"E_BAD_{key.upper()}",
            7,
            f"targets.hpc.{key}",
            V,
            f"{key} must be a str, got 5",
            f"slurm-{key}",
        )
        for key in ("queue", "account", "interface", "logs_location", "name")
    ],
    case(
        HEAD + "targets:\n  hpc:\n    provider: slurm\n    walltime: 2h\n",
        "E_BAD_WALLTIME",
        6,
        "targets.hpc.walltime",
        V,
        "walltime must be a string like '02:00:00'",
        "slurm-walltime-text",
    ),
    case(
        HEAD + "targets:\n  hpc:\n    provider: slurm\n    walltime: 2:00:00\n",
        "E_BAD_WALLTIME",
        6,
        "targets.hpc.walltime",
        V,
        "got 7200",
        "slurm-walltime-unquoted-is-a-yaml-number",
    ),
    case(
        HEAD + "targets:\n  hpc:\n    provider: slurm\n    walltime: '1000:00:00'\n",
        "E_BAD_WALLTIME",
        6,
        "targets.hpc.walltime",
        V,
        "walltime",
        "slurm-walltime-4-digit-hours",
    ),
    case(
        HEAD + "targets:\n  hpc:\n    provider: slurm\n    suppress_logs: 'no'\n",
        "E_BAD_SUPPRESS_LOGS",
        6,
        "targets.hpc.suppress_logs",
        V,
        "suppress_logs must be a boolean",
        "slurm-suppress-logs",
    ),
    case(
        HEAD + "targets:\n  hpc:\n    provider: slurm\n    comm_port: 0\n",
        "E_BAD_COMM_PORT",
        6,
        "targets.hpc.comm_port",
        V,
        "comm_port must be a positive integer, got 0",
        "slurm-comm-port",
    ),
    case(
        HEAD + "targets:\n  hpc:\n    provider: slurm\n    container_runtime: singularity\n",
        "E_BAD_CONTAINER_RUNTIME",
        6,
        "targets.hpc.container_runtime",
        V,
        "container_runtime must be one of apptainer, docker",
        "slurm-container-runtime",
    ),
    # --- dask provider -----------------------------------------------------------------------
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    address: 8786\n",
        "E_BAD_ADDRESS",
        6,
        "targets.d.address",
        V,
        "address must be a str",
        "dask-address",
    ),
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    timeout: -1\n",
        "E_BAD_TIMEOUT",
        6,
        "targets.d.timeout",
        V,
        "timeout must be a positive integer",
        "dask-timeout",
    ),
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    n_workers: 0\n",
        "E_BAD_N_WORKERS",
        6,
        "targets.d.n_workers",
        V,
        "n_workers must be a positive integer",
        "dask-n-workers",
    ),
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    threads_per_worker: 1.5\n",
        "E_BAD_THREADS_PER_WORKER",
        6,
        "targets.d.threads_per_worker",
        V,
        "positive integer, got 1.5",
        "dask-threads",
    ),
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    processes: 1\n",
        "E_BAD_PROCESSES_FLAG",
        6,
        "targets.d.processes",
        V,
        "processes must be a boolean, got 1",
        "dask-processes",
    ),
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    memory_limit: [2GB]\n",
        "E_BAD_MEMORY_LIMIT",
        6,
        "targets.d.memory_limit",
        V,
        "memory_limit must be a str or an integer",
        "dask-memory-limit",
    ),
    case(
        HEAD + "targets:\n  d:\n    provider: dask\n    address: tcp://h:1\n    n_workers: 2\n",
        "E_CONFLICTING_OPTIONS",
        7,
        "targets.d.n_workers",
        V,
        "n_workers cannot be given with address: it configures a cluster scalable starts, and with address the scheduler's own workers are used; remove n_workers",
        "dask-address-with-cluster-options",
    ),
    # --- the cloud providers -----------------------------------------------------------------
    case(
        HEAD + "targets:\n  b:\n    provider: aws\n    cluster_type: batch\n",
        "E_INVALID_CLUSTER_TYPE",
        6,
        "targets.b.cluster_type",
        V,
        "cluster_type must be one of fargate, ec2, got 'batch'",
        "aws-cluster-type",
    ),
]


@pytest.mark.parametrize(("text", "code", "line", "key", "cls", "message"), BAD)
def test_each_bad_manifest_gives_one_error_with_file_line_and_code(
    isolated: Path, text: str, code: str, line: int | None, key: str, cls: type[ManifestError], message: str
) -> None:
    """The error is of Scalable's kind, names file, line, code and key path, says what is wrong, on one line."""
    path = isolated / "scalable.yaml"
    path.write_text(text)
    with pytest.raises(cls) as info:
        load_manifest(path)
    exc = info.value
    assert (exc.code, exc.line, exc.key, exc.file) == (code, line, key, str(path))
    where = f"{path}:{line}" if line else str(path)
    assert str(exc).startswith(f"{where}: {code} {key}: ")
    assert message in str(exc)
    assert "\n" not in str(exc)
    assert isinstance(exc, ManifestError) and isinstance(exc, ConfigError) and isinstance(exc, ValueError)


def test_an_unreadable_file_is_a_parse_error(isolated: Path) -> None:
    """A file that is not UTF-8 is a ManifestParseError naming it (E_READ)."""
    path = isolated / "scalable.yaml"
    path.write_bytes(b"version: 1\nproject: {name: \xff}\n")
    with pytest.raises(ManifestParseError, match=rf"^{path}: E_READ \(top level\): cannot be read") as info:
        load_manifest(path)
    assert info.value.code == "E_READ"


def test_a_missing_file_is_a_not_found_manifest_error(isolated: Path) -> None:
    """A missing manifest names the path and is also a FileNotFoundError; a directory is refused too."""
    with pytest.raises(ManifestNotFoundError, match=r"nope\.yaml.*SCALABLE_MANIFEST"):
        load_manifest(isolated / "nope.yaml")
    with pytest.raises(FileNotFoundError):
        load_manifest(isolated / "nope.yaml")
    with pytest.raises(ManifestNotFoundError, match="is a directory"):
        load_manifest(isolated)


def test_a_source_that_is_neither_text_nor_mapping_is_refused() -> None:
    """parse_manifest of a list is a schema error, not a crash."""
    with pytest.raises(ManifestSchemaError, match=r"E_BAD_TYPE.*YAML text or a mapping, got list"):
        parse_manifest([1, 2])  # type: ignore[arg-type]


def test_an_overlay_that_breaks_the_document_is_reported_at_its_own_line(isolated: Path) -> None:
    """A bad value an overlay brings in is named at the overlay's line, only when that overlay applies."""
    path = isolated / "scalable.yaml"
    path.write_text(
        HEAD
        + "targets:\n  hpc: {provider: slurm, comm_port: 1, overlay: big}\ncomponents:\n  c: {cpus: 2}\n"
        + "overlays:\n  big:\n    components:\n      c:\n        cpus: 0\n"
    )
    assert load_manifest(path).components["c"].cpus == 2
    with pytest.raises(ManifestSchemaError) as info:
        load_manifest(path, target_name="hpc")
    assert (info.value.code, info.value.line, info.value.key) == ("E_BAD_VALUE", 11, "components.c.cpus")


def test_an_explicit_overlay_must_exist(isolated: Path) -> None:
    """overlay_name of an undefined overlay lists the defined ones."""
    path = isolated / "scalable.yaml"
    path.write_text(HEAD + "overlays:\n  a: {}\n  b: {}\n")
    with pytest.raises(
        ManifestSchemaError,
        match=r"E_UNKNOWN_OVERLAY \(top level\): overlay 'c' referenced but not defined; available overlays: \['a', 'b'\]",
    ):
        load_manifest(path, overlay_name="c")


def test_an_unknown_target_lists_the_known_ones(isolated: Path) -> None:
    """Loading for, or asking for, an unknown target names the known ones (local is always one)."""
    path = isolated / "scalable.yaml"
    path.write_text(HEAD + "targets:\n  cluster: {provider: dask}\n")
    with pytest.raises(
        ManifestValidationError,
        match=r":3: E_UNKNOWN_TARGET targets: unknown target 'gpu'; known targets: cluster, local$",
    ) as info:
        load_manifest(path, target_name="gpu")
    assert info.value.code == "E_UNKNOWN_TARGET"
    with pytest.raises(ManifestValidationError, match="unknown target 'gpu'"):
        load_manifest(path).target("gpu")


def test_a_slurm_target_without_a_port_fails_only_where_it_is_used(isolated: Path) -> None:
    """E_MISSING_COMM_PORT comes when the slurm target is chosen and neither comm_port nor COMM_PORT is set."""
    path = isolated / "scalable.yaml"
    path.write_text(HEAD + "targets:\n  local: {provider: local}\n  hpc:\n    provider: slurm\n    queue: short\n")
    manifest = load_manifest(path)  # fine on a machine that only uses the local target
    assert manifest.target("local").provider == "local"
    with pytest.raises(ManifestValidationError) as info:
        load_manifest(path, target_name="hpc", env={})
    assert (info.value.code, info.value.line, info.value.key) == ("E_MISSING_COMM_PORT", 5, "targets.hpc")
    assert "comm_port is required for slurm targets: set it in the target or set COMM_PORT" in str(info.value)
    with pytest.raises(ManifestValidationError, match="E_MISSING_COMM_PORT"):
        manifest.check_target("hpc", env={})
    assert manifest.check_target("hpc", env={"COMM_PORT": "8786"}).name == "hpc"
    assert load_manifest(path, target_name="hpc", env={"COMM_PORT": "8786"}).targets["hpc"].provider == "slurm"


@pytest.mark.parametrize(
    ("provider", "options"),
    [("kubernetes", "image: x"), ("aws", "region: us-east-1"), ("gcp", "project_id: p")],
)
def test_targets_this_scalable_cannot_run_validate_then_say_so_when_used(
    isolated: Path, provider: str, options: str
) -> None:
    """kubernetes, aws and gcp load and validate; using the target raises TargetNotSupportedError."""
    path = isolated / "scalable.yaml"
    path.write_text(HEAD + f"targets:\n  remote:\n    provider: {provider}\n    {options}\n")
    manifest = load_manifest(path, target_name="remote")
    assert manifest.check_target("remote").provider == provider
    with pytest.raises(TargetNotSupportedError) as info:
        manifest.target("remote")
    assert (info.value.code, info.value.line, info.value.key) == (
        "E_PROVIDER_NOT_SUPPORTED",
        5,
        "targets.remote.provider",
    )
    assert f"uses provider {provider!r}, which this version of scalable validates but cannot run yet" in str(info.value)
    assert isinstance(info.value, NotImplementedError)
