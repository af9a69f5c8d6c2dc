"""Vendor the explorer's graph libraries from the npm registry, pinned, with their licences.

``python tools/vendor_ui_assets.py`` runs ``npm pack`` for each pinned package in a temporary
directory, copies the files the explorer loads and each package's LICENSE into
``scalable/ui/static/vendor/``, and writes ``vendor.lock.json`` there: every package's
version, licence, the registry's integrity hash of its tarball, and the SHA-256 of every file
copied. The files are committed, so a fresh clone (and the explorer, offline) needs no npm.

``python tools/vendor_ui_assets.py --check`` needs no network: it exits 1 unless the files in
the vendor directory are exactly those the lock names, with those SHA-256 digests.

cytoscape-dagre's browser bundle carries dagre and graphlib inside it; they are listed (with
their licences) as ``bundled_in`` it, and the check finds their versions in the bundle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCK", "PACKAGES", "VENDOR", "Package", "check", "main", "vendor"]

VENDOR = Path(__file__).resolve().parents[1] / "scalable" / "ui" / "static" / "vendor"
LOCK = VENDOR / "vendor.lock.json"


@dataclass(frozen=True)
class Package:
    """One npm package: where its files go, which files, and what bundles it."""

    name: str
    version: str
    directory: str
    files: tuple[str, ...] = ()
    licence_file: str = "LICENSE"
    bundled_in: str | None = None
    #: text that must appear in the bundling package's files (how its version shows there)
    marker: str | None = None


PACKAGES: tuple[Package, ...] = (
    Package("cytoscape", "3.35.0", "cytoscape", files=("dist/cytoscape.min.js",)),
    Package("cytoscape-dagre", "4.0.1", "cytoscape-dagre", files=("dist/cytoscape-dagre.min.js",)),
    Package("@dagrejs/dagre", "3.0.0", "dagre", bundled_in="cytoscape-dagre", marker='version:"3.0.0"'),
    Package("@dagrejs/graphlib", "4.0.1", "graphlib", bundled_in="cytoscape-dagre", marker='="4.0.1"'),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pack(spec: str, into: Path) -> dict[str, object]:
    """``npm pack`` one package into ``into``; return npm's description of the tarball."""
    proc = subprocess.run(
        ["npm", "pack", "--json", "--ignore-scripts", "--pack-destination", str(into), spec],
        cwd=into,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"npm pack {spec} failed: {proc.stderr.strip().splitlines()[-1:]}")
    described: list[dict[str, object]] = json.loads(proc.stdout)
    return described[0]


def vendor() -> dict[str, object]:
    """Fetch every pinned package and rewrite the vendor directory and its lock; return the lock."""
    if shutil.which("npm") is None:
        raise SystemExit("npm is not installed; it is needed to fetch the packages (the committed files need none)")
    packages: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="scalable-vendor-") as tmp:
        work = Path(tmp)
        staged = work / "vendor"
        staged.mkdir()
        for package in PACKAGES:
            described = _pack(f"{package.name}@{package.version}", work)
            unpacked = work / "unpacked" / package.directory
            with tarfile.open(work / str(described["filename"])) as archive:
                archive.extractall(unpacked, filter="data")
            root = unpacked / "package"
            meta = json.loads((root / "package.json").read_text())
            if meta["version"] != package.version:
                raise SystemExit(f"{package.name}: npm gave version {meta['version']}, not {package.version}")
            target = staged / package.directory
            target.mkdir()
            files: dict[str, str] = {}
            for source in (*package.files, package.licence_file):
                dest = target / Path(source).name
                shutil.copyfile(root / source, dest)
                files[f"{package.directory}/{dest.name}"] = _sha256(dest)
            packages.append(
                {
                    "name": package.name,
                    "version": package.version,
                    "license": meta.get("license"),
                    "integrity": described["integrity"],
                    "tarball": f"https://registry.npmjs.org/{package.name}/-/{described['filename']}",
                    "bundled_in": package.bundled_in,
                    "files": files,
                }
            )
        lock: dict[str, object] = {"packages": packages}
        (staged / LOCK.name).write_text(json.dumps(lock, indent=2) + "\n")
        problems = check(staged)
        if problems:
            raise SystemExit("the vendored files fail their own check: " + "; ".join(problems))
        if VENDOR.exists():
            shutil.rmtree(VENDOR)
        shutil.copytree(staged, VENDOR)
    return lock


def check(vendor_dir: Path = VENDOR) -> list[str]:
    """Problems with the vendored files: missing, extra or changed files, a bundled version not in its bundle."""
    lock_path = vendor_dir / LOCK.name
    if not lock_path.exists():
        return [f"{lock_path} is missing; run tools/vendor_ui_assets.py"]
    lock = json.loads(lock_path.read_text())
    problems: list[str] = []
    named: set[str] = set()
    by_name = {p["name"]: p for p in lock["packages"]}
    pinned = {p.name: p for p in PACKAGES}
    for entry in lock["packages"]:
        want = pinned.get(entry["name"])
        if want is None or want.version != entry["version"]:
            problems.append(f"{entry['name']} {entry['version']} in the lock is not the pinned version")
        if not any(Path(f).name.upper().startswith("LICENSE") for f in entry["files"]):
            problems.append(f"{entry['name']} has no licence file")
        for rel, digest in entry["files"].items():
            named.add(rel)
            path = vendor_dir / rel
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif _sha256(path) != digest:
                problems.append(f"{rel} does not match its SHA-256 in the lock")
        if want is not None and want.bundled_in and want.marker:
            bundle = by_name.get(want.bundled_in, {"files": {}})
            scripts = [vendor_dir / f for f in bundle["files"] if f.endswith(".js") and (vendor_dir / f).is_file()]
            if not any(want.marker in p.read_text(errors="replace") for p in scripts):
                problems.append(f"{entry['name']} {entry['version']} is not what {want.bundled_in} bundles")
    missing = {p.name for p in PACKAGES} - set(by_name)
    problems += [f"{name} is pinned but not in the lock" for name in sorted(missing)]
    present = {str(p.relative_to(vendor_dir)) for p in vendor_dir.rglob("*") if p.is_file() and p != lock_path}
    problems += [f"{rel} is not in the lock" for rel in sorted(present - named)]
    return problems


def main(argv: list[str] | None = None) -> int:
    """Vendor the packages (or ``--check`` the vendored files)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="verify the vendored files against the lock (offline)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    lock = vendor()
    for entry in lock["packages"]:  # type: ignore[attr-defined]
        print(f"{entry['name']} {entry['version']} ({entry['license']}): {', '.join(entry['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
