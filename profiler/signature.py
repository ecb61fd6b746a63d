"""Op signatures (moved to the torch-free data layer, ``costdb.signature``; re-exported here)."""
from costdb.signature import SIGNATURE_FIELDS, canonical, signature

__all__ = ["SIGNATURE_FIELDS", "canonical", "signature"]
