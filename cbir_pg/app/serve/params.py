"""The route parameters every page and API route shares, declared once (FastAPI ``Annotated``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi import Path as PathParam

from cbir_pg.app.serve.auth import Actor, current_actor

#: the largest image id (``cbir.image.id`` is a bigint)
MAX_ID = 2**63 - 1

#: an image id in the path: a positive bigint, else a 400
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID)]

#: the acting person, resolved once per request by :func:`~cbir_pg.app.serve.auth.current_actor`
CurrentActor = Annotated[Actor, Depends(current_actor)]
