"""The predictions API: Replicate's and Cog's protocols, one entry in the app's ROUTERS.

Both protocol routers serve from one prediction store, whose lifespan this router runs
(``inference.http.protocols.lifespan``).
"""

from __future__ import annotations

from fastapi import APIRouter

from inference.http.protocols import lifespan
from inference.http.routes import cog, replicate

router = APIRouter(lifespan=lifespan)
router.include_router(replicate.router)
router.include_router(cog.router)
