"""The provenance explorer: a local, read-only web app over the ledger (``scalable ui``).

Its pages (runs, a run, two runs compared, artifact versions, lineage graphs, audits, SQL)
and the JSON endpoints behind them read the ledger only through the public ``Ledger`` API.
It needs the ``ui`` extra (``pip install 'scalable[ui]'``: Starlette and uvicorn); ``import
scalable`` never imports it.
"""

from __future__ import annotations

from scalable.errors import MissingDependencyError

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"the explorer needs {exc.name or 'starlette and uvicorn'}: pip install 'scalable[ui]'"
    ) from None

from scalable.ui.access import AccessPolicy, access_policy
from scalable.ui.app import create_app
from scalable.ui.server import running, serve

__all__ = ["AccessPolicy", "access_policy", "create_app", "running", "serve"]
