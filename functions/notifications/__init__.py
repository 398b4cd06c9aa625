"""notifications: the shop's e-mails (welcome, cart removal, invoice, admin messages)."""

APP_ID = "notifications"
