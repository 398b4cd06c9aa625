from functions.common.periodic import Periodic
from functions.common.web import create_app
from functions.payments import APP_ID
from functions.payments.models import InvoiceNumber, InvoiceSequence, MailRequest, Order, Payment, SimulatedCharge
from functions.payments.routes import router
from functions.payments.saga import DEADLINE_SWEEP_SECONDS, settle_overdue_orders
from functions.payments.settings import PaymentsSettings
from functions.payments.subscriptions import subscriptions

app = create_app(
    app_id=APP_ID,
    title="payments",
    description=(
        "Orders (a choreographed saga: pending → stock_reserved → paid → invoiced, or rejected, "
        "or payment_failed, or expired past its deadline), card payments through a replaceable processor, and invoices with "
        "gap-free sequential numbers. Publishes `order_created`, `cart_checkout`, "
        "`payment_processed`, `payment_failed`, `order_cancelled`, `invoice_processing`, "
        "`email_notification` (POST /api/facture); consumes `stock_reserved`, `stock_rejected`."
    ),
    models=[Order, Payment, InvoiceNumber, InvoiceSequence, SimulatedCharge, MailRequest],
    routers=[router],
    subscriptions=subscriptions,
    jobs=[Periodic("order deadlines", settle_overdue_orders, DEADLINE_SWEEP_SECONDS, wait_first=True)],
    settings_kind=PaymentsSettings,
)
