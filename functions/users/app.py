from functions.common.web import create_app
from functions.users import APP_ID
from functions.users.models import User
from functions.users.routes import router
from functions.users.settings import UsersSettings
from functions.users.setup import ensure_admin

app = create_app(
    app_id=APP_ID,
    title="users",
    description="Registration, login (JWT, 1 h) and the caller's profile. Publishes `welcome_flow` and `user_login`.",
    models=[User],
    routers=[router],
    on_startup=[ensure_admin],
    settings_kind=UsersSettings,
)
