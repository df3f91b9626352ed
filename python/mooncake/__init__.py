"""Mooncake-compatible Python package of the C transfer engine (libte).

``mooncake.engine`` is a drop-in for Mooncake's ``mooncake.engine`` module:
``from mooncake.engine import TransferEngine, TransferNotify, TransferOpcode``.
"""

__version__ = "0.1.0"
