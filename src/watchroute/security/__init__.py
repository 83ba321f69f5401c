"""Security built in: authentication, grants and per-document rules that hold for watches,
limits, browser safety and the audit log. See docs/security.md for the decisions.

`install.install(app, security)` puts the door (middleware.py) and CORS in front of the app;
routes ask `policy.Security.authorize` / `write_guard`, and `watch.open_watch` asks
`Security.admit_watch`. The settings are the security group of `watchroute.settings`
(`settings/security.py`). Nothing is imported here: a module that needs only the audit log
(`security/audit.py`) does not load the rest.
"""
