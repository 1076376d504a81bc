"""The gunicorn entry point of the throughput run: ``wsgi:app`` with ``--chdir bench``.

The backend is named by ``SATCHEL_BENCH_BACKEND``; where its services live
comes from the ``SATCHEL_BENCH_*`` variables the run exports (see
``services.Services.to_env``). Each worker builds its own app, as a real
deployment would.
"""

from __future__ import annotations

import os

import apps
from services import Services

app = apps.build(os.environ["SATCHEL_BENCH_BACKEND"], Services.from_env())
