"""The store: tables and their migrations, engines and sessions, the workspace, users, the audit log."""
