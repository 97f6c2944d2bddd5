"""SMPP 3.4: the protocol every operator and SMS aggregator offers.

`pdu` (the codec), `text` (GSM 03.38 or UCS-2), `session` (one persistent
transceiver bind), `receipts` (delivery receipts), `settings` (the options),
`provider` (`SmppProvider`, the `smpp` entry point). docs/providers.md has
the operator's view.
"""

from providers.smpp.provider import SmppProvider

__all__ = ["SmppProvider"]
