"""cart: each customer's cart, priced by products, emptied by the order that checks it out."""

APP_ID = "cart"
