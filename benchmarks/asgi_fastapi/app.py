"""The ASGI benchmark's application: FastAPI, pydantic and SQLAlchemy 2.0 with in-memory SQLite.

The harness copies this folder into a watched tree next to a ``version.py`` it rewrites.
``GET /`` answers the tree's current VERSION as plain text; ``GET /owners`` reads the database.
Every tool serves ``app:app`` with the tree as its working folder.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

# The version file changes several times a second; a stale .pyc (mtime has 1 s resolution)
# would make the app report the previous version.
sys.dont_write_bytecode = True

import version  # noqa: E402
from fastapi import Depends, FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import PlainTextResponse  # noqa: E402
from models import Item, Owner, item_count, make_engine  # noqa: E402
from schemas import Health, ItemIn, ItemOut, OwnerOut  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session, selectinload  # noqa: E402


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.engine = make_engine()
    print(f"START {os.getpid()} {version.VERSION} {time.monotonic_ns()}", flush=True)
    yield
    app.state.engine.dispose()


app = FastAPI(title="aioreload ASGI benchmark", lifespan=lifespan)


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


DB = Annotated[Session, Depends(get_session)]


@app.get("/", response_class=PlainTextResponse)
def current_version() -> str:
    return str(version.VERSION)


@app.get("/health")
def health(session: DB) -> Health:
    return Health(version=version.VERSION, items=item_count(session))


@app.get("/owners")
def owners(session: DB) -> list[OwnerOut]:
    rows = session.scalars(select(Owner).options(selectinload(Owner.items)).order_by(Owner.id))
    return [OwnerOut.model_validate(row) for row in rows]


@app.post("/items", status_code=201)
def add_item(body: ItemIn, session: DB) -> ItemOut:
    owner = session.scalar(select(Owner).where(Owner.name == body.owner))
    if owner is None:
        raise HTTPException(404, f"no owner {body.owner!r}")
    item = Item(title=body.title, price_cents=body.price_cents, owner=owner)
    session.add(item)
    session.commit()
    return ItemOut.model_validate(item)
