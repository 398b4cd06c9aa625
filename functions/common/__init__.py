"""Code shared by every function app: settings, auth, event contracts, publishing, database."""
