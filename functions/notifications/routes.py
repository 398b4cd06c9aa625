from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from functions.common.auth import CurrentUser
from functions.common.web import PageLimit, PageOffset
from functions.notifications.models import Email
from functions.notifications.schemas import EmailOut, EmailPage

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.get("", summary="The caller's e-mails, newest first (admins: anyone's, filter with ?to=)")
async def list_emails(
    principal: CurrentUser,
    to: Annotated[str | None, Query(max_length=320, description="admins: only e-mails to this address")] = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> EmailPage:
    wanted = to.strip().lower() if to and to.strip() else None
    own = principal.email.lower()
    if principal.is_admin:
        query = {"to": wanted} if wanted else {}
    elif wanted is not None and wanted != own:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You can only read your own e-mails")
    else:
        query = {"to": own}
    total = await Email.find(query).count()
    emails = await Email.find(query).sort([("createdAt", -1), ("_id", -1)]).skip(offset).limit(limit).to_list()
    return EmailPage(message=f"{total} e-mail(s)", data=[EmailOut.of(e) for e in emails], total=total)
