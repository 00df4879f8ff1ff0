"""The web dashboard of rjobs (``rjobs dashboard``; docs/dashboard.md): queues, charts, jobs, live
updates and actions, served by Starlette and uvicorn (the ``dashboard`` extra:
``pip install 'rjobs[dashboard]'``).

Layer: above the client (it uses the public Queue API) and below the CLI, which starts it.
"""

from __future__ import annotations

from rjobs.dashboard.app import create_app, serve
from rjobs.dashboard.options import DashboardOptions

__all__ = ["DashboardOptions", "create_app", "serve"]
