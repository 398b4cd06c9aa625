from functions.cart import APP_ID
from functions.cart.models import Cart
from functions.cart.routes import router
from functions.cart.subscriptions import subscriptions
from functions.common.web import create_app

app = create_app(
    app_id=APP_ID,
    title="cart",
    description=(
        "Each customer's cart. Names and prices come from products (service invocation). "
        "Publishes `cart_updates` and `cart_removals`; consumes `cart_checkout`."
    ),
    models=[Cart],
    routers=[router],
    subscriptions=subscriptions,
)
