from functions.common.periodic import Periodic
from functions.common.web import create_app
from functions.products import APP_ID
from functions.products.catalogue import seed_catalogue
from functions.products.models import CatalogueSeed, Product, StockReservation
from functions.products.routes import router
from functions.products.stock import STRAY_HOLDS_SWEEP_SECONDS, return_stray_holds
from functions.products.subscriptions import subscriptions

app = create_app(
    app_id=APP_ID,
    title="products",
    description=(
        "The catalogue (read by anyone, changed by admins) and its stock. Publishes `product_created`, "
        "`stock_reserved`, `stock_rejected`; consumes `order_created`, `order_cancelled`, `payment_processed`."
    ),
    models=[Product, StockReservation, CatalogueSeed],
    routers=[router],
    subscriptions=subscriptions,
    on_startup=[seed_catalogue],
    jobs=[Periodic("stray holds sweep", return_stray_holds, STRAY_HOLDS_SWEEP_SECONDS, wait_first=True)],
)
