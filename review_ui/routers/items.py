"""Single items: what happened to one (votes, decision, audit trail), and experts making one gold."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path
from sqlalchemy import select

from labeler.store import audit, models
from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui import answers
from review_ui.auth import MANAGERS, allow, workspace
from review_ui.queue import EXPERTS
from review_ui.schemas import GoldMark

router = APIRouter(prefix="/api/items", tags=["items"])


@router.get("/{external_id}")
def item(external_id: str, ws: Workspace = Depends(workspace), _: Member = Depends(allow(*MANAGERS, *EXPERTS))) -> dict:
    with ws.session() as s:
        found = s.scalars(select(models.Item).where(models.Item.project_id == ws.project_id,
                                                    models.Item.external_id == external_id)).first()
        if found is None:
            raise HTTPException(404, f"no item {external_id!r}")
        decision = s.get(models.Decision, found.id)
    return {"id": found.external_id, "fields": found.fields,
            "decision": decision.model_dump(mode="json", exclude={"item_id"}) if decision else None,
            "history": audit.events(ws, item_id=found.id)}


@router.post("/{item_id}/gold", status_code=204)
def make_gold(body: GoldMark, item_id: int = Path(ge=1, le=2**63 - 1), ws: Workspace = Depends(workspace),
              user: Member = Depends(allow(*EXPERTS))) -> None:
    """Make the item gold (calibration or honeypot) or a guideline example for the prompt."""
    answers.promote_to_gold(ws, user, item_id, body.label, models.Split(body.split))
