"""The OTP engine wing: challenges, codes, tokens, Lua scripts, the send queue and its worker,
the dispatcher and its breakers, delivery states and voice scripts.

The provider-facing interface stays at `gateway.provider` (external provider
packages import it), and the message texts at `gateway.messages` (the
configuration reads them): both are core.
"""
