"""``python -m devstack``: same as ``python -m devstack.stack``."""

from devstack.stack import main

main()
