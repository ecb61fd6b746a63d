"""The measurement agent: one implementation run in-process for ``local`` and shipped to SSH devices.

Everything in this package must stay Python 3.6 compatible (Jetson TX2 / JetPack 4.6) and use only
the standard library plus torch >= 1.8. ``tests/test_agent_py36.py`` checks the syntax with
``ast.parse(..., feature_version=(3, 6))``. ``devices.agent_bundle`` packs it into one zipapp file.
"""

AGENT_VERSION = "1"
PROTOCOL_VERSION = 1
