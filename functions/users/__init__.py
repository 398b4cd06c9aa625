"""users: registration, login (JWT) and the caller's profile."""

APP_ID = "users"
