"""Simulators of providers' APIs, for demos, tests and benchmarks (`otp-gateway simulate`)."""
