"""The web dashboard of rjobs (``rjobs dashboard``; docs/dashboard.md): queues, charts, jobs, live
updates and actions, served by Starlette and uvicorn (the ``dashboard`` extra:
``pip install 'rjobs[dashboard]'``).

Layer: above the client (it uses the public Queue API) and below the CLI, which starts it.
:class:`DashboardOptions` imports nothing of the extra, so the CLI can check settings and say
what to install; :func:`create_app` and :func:`serve` load the web stack when first used.
"""

from __future__ import annotations

from typing import Any

from rjobs.dashboard.options import DashboardOptions

__all__ = ["DashboardOptions", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from rjobs.dashboard import app

        return getattr(app, name)
    raise AttributeError(f"module 'rjobs.dashboard' has no attribute {name!r}")
