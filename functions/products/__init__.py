"""products: the catalogue, and the stock that orders reserve and release."""

APP_ID = "products"
