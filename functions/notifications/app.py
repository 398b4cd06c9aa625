from functions.common.periodic import Periodic
from functions.common.web import create_app
from functions.notifications import APP_ID, mailer
from functions.notifications.models import Email, VerifiedAddress
from functions.notifications.routes import router
from functions.notifications.sending import RESEND_SWEEP_SECONDS, resend_stalled
from functions.notifications.settings import NotificationsSettings
from functions.notifications.subscriptions import subscriptions

app = create_app(
    app_id=APP_ID,
    title="notifications",
    description=(
        "The shop's e-mails, one per event: `welcome_flow`, `cart_removals`, `invoice_processing` "
        "(the invoice, rendered here from its lines and amounts), `email_notification`. "
        "Sent through SendGrid when SENDGRID_API_KEY is set, otherwise kept here (status `outboxed`); "
        "held (status `held`) for an address not yet verified (`email_verified`), the welcome excepted."
    ),
    models=[Email, VerifiedAddress],
    routers=[router],
    subscriptions=subscriptions,
    on_shutdown=[mailer.close],
    jobs=[Periodic("stalled e-mails", resend_stalled, RESEND_SWEEP_SECONDS, wait_first=True)],
    settings_kind=NotificationsSettings,
)
