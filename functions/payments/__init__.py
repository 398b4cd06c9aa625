"""payments: orders (a choreographed saga), card payments and invoices."""

APP_ID = "payments"
