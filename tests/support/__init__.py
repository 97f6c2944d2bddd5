"""What the tests share besides fixtures (those live in tests/conftest.py).

config    the test configuration: API keys, the secret, `make_config`
gateway   `Gateway`, the app under test as a client sees it; `start_gateway`, `add_account`
httpfake  `Stub`: an HTTP server speaking the `http` provider's protocol
poll      `poll` (async) and `wait_until` (sync): a condition, within a deadline
metrics   `sample`: one value of a Prometheus text exposition
otp       calls and checks of the OTP routes (challenge, verify, status)
queues    the send queue's 16 streams, dead letters and call-again schedules, summed or merged
admin     admin and operator calls, step-up tokens, the tenant fixture set
smtp      `Inbox`: a real SMTP server (aiosmtpd) in the test's loop
twilio    the Twilio simulator as a peer, with gateways it can call back
ovh       `FakeOvh`: a fake OVHcloud SMS API that checks every signature
ops       `otp-gateway` child processes, their config files, Prometheus's tools
procs     `python -m gateway` child processes for the start-up refusal tests
rawhttp   raw HTTP/1.1 over a socket, and the app served as `serve` serves it
tcpproxy  a TCP proxy in front of Redis that can lose or hold one reply
cluster   a real 3-primary Redis Cluster (start, reshard, kill), `OTP_TESTS_REDIS=cluster`
logs      the gateway's own log lines during a test, as JSON
dates     dates relative to today (tests/test_no_absolute_dates.py)
console   the admin console as a browser without JavaScript uses it (forms, cookies)
browser   headless Chromium (Selenium, chromedriver) and axe-core (the vendored axe/)
frontend  the example login front end (examples/login_frontend) before a test gateway
"""
