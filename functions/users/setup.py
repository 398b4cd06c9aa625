"""Start-up: the admin account from SHOP_ADMIN_EMAIL / SHOP_ADMIN_PASSWORD."""

import logging

from pymongo.errors import DuplicateKeyError

from functions.common import store
from functions.users.models import User
from functions.users.passwords import hash_password, verify_password
from functions.users.settings import get_settings

log = logging.getLogger(__name__)


async def ensure_admin() -> None:
    """Create the admin account if it is missing; if it exists, give it SHOP_ADMIN_PASSWORD when
    that changed (rotating the password is changing the variable and restarting users).

    Safe when several replicas start at once: the unique e-mail index lets one insert win and
    the others find the account already there.
    """
    settings = get_settings()
    email = settings.admin_email.strip().lower()
    existing = await User.find_one(User.email == email)
    if existing is None:
        admin = User(
            name="Admin",
            lastName="Shop",
            email=email,
            passwordHash=await hash_password(settings.admin_password),
            role="admin",
        )
        try:
            await store.insert(admin)
            log.info("created the admin account %s", email)
            return
        except DuplicateKeyError:
            existing = await User.find_one(User.email == email)
    if existing is not None and existing.role != "admin":
        # Promoting it would hand admin rights to whoever registered that e-mail first.
        log.error("SHOP_ADMIN_EMAIL %s belongs to a customer account; no admin was created", email)
    elif existing is not None and not await verify_password(existing.passwordHash, settings.admin_password):
        new_hash = await hash_password(settings.admin_password)
        await store.update(User, existing.id, {"$set": {"passwordHash": new_hash}}, where={"role": "admin"})
        log.warning("the admin account %s has a new password (SHOP_ADMIN_PASSWORD changed)", email)
