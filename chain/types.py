"""Named quantities and the protocol's fixed constants.

Constants here never change between networks; per-network figures are genesis
parameters (see `consensus.params`).
"""

from typing import NewType

Height = NewType("Height", int)
Round = NewType("Round", int)
Amount = NewType("Amount", int)
Nonce = NewType("Nonce", int)
TimestampMs = NewType("TimestampMs", int)
Address = NewType("Address", bytes)
Hash32 = NewType("Hash32", bytes)
PublicKey = NewType("PublicKey", bytes)

UINT64_MAX = 2**64 - 1
BASE_UNITS_PER_GPU = 10**9
ADDRESS_LEN = 20
HASH_LEN = 32
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
ZERO_HASH = Hash32(bytes(HASH_LEN))
MAX_CHAIN_ID_LEN = 64
