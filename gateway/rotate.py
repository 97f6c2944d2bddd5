"""`python -m gateway.rotate`: the operators' documented command (docs/accounts.md).

The rotation itself lives in the accounts wing, `gateway.accounts.rotate`;
this module keeps the documented command working.
"""

from gateway.accounts.rotate import main

if __name__ == "__main__":
    raise SystemExit(main())
