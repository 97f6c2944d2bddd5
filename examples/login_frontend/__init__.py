"""An example login front end for otp-gateway: a login form, the code step, "connecté".

Clearly an example (a starting point to copy, not part of the gateway): it plays a
platform's login pages and calls the gateway's API server-side with its own API key,
which never reaches the browser. The browser talks only to this server; the three
gateway calls it needs (`POST /challenge`, `POST /verify`,
`POST /challenge/{id}/resend`) are made here. See README.md beside this file.

- `app`: the pages (aiohttp + Jinja2) and the sessions (in memory: one process);
- `gateway`: the three calls to the gateway, errors as the gateway's JSON;
- `messages`: the gateway's error codes as French sentences (the drop-in step's table);
- `settings`: configuration from environment variables.
"""
