"""The ``scalable.yaml`` manifest: Scalable's schema v1, checked with file, line and error code.

A manifest looks like::

    version: 1
    project:
      name: my-project
      default_storage: s3://my-bucket/scalable-runs/   # optional
      local_cache: .scalable/cache                     # optional
    targets:
      local: {provider: local, max_workers: 4, threads_per_worker: 1, containers: none}
      cluster: {provider: dask, n_workers: 2, threads_per_worker: 1}
      hpc: {provider: slurm, queue: short, walltime: "02:00:00", comm_port: 8786, overlay: hpc}
    components:
      model: {cpus: 4, memory: 8GB, env: {OMP_NUM_THREADS: "4"}}
    tasks:
      run_model: {component: model, cache: true}
    overlays:
      hpc: {components: {model: {memory: 64GB}}}

:func:`load_manifest` reads it into a :class:`Manifest`; every error is a
:class:`~scalable.errors.ManifestError` subclass naming file, line, Scalable's error code and
the key path. The lock is the SHA-256 Scalable computes for the same document.
"""

from __future__ import annotations

from scalable.manifest.expand import deep_merge, expand_env_vars
from scalable.manifest.issues import ManifestIssue, ManifestWarning
from scalable.manifest.model import ComponentSpec, Manifest, ProjectSpec, TargetSpec, TaskSpec
from scalable.manifest.parser import (
    DEFAULT_MANIFEST,
    SCHEMA_VERSION,
    load_manifest,
    manifest_lock,
    parse_manifest,
    resolve_manifest_path,
)

__all__ = [
    "DEFAULT_MANIFEST",
    "SCHEMA_VERSION",
    "ComponentSpec",
    "Manifest",
    "ManifestIssue",
    "ManifestWarning",
    "ProjectSpec",
    "TargetSpec",
    "TaskSpec",
    "deep_merge",
    "expand_env_vars",
    "load_manifest",
    "manifest_lock",
    "parse_manifest",
    "resolve_manifest_path",
]
