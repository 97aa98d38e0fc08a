"""Ids and the fast block encoding agree with the canonical codec."""

from hypothesis import given, settings

from chain.codec import encode
from chain.records import Block, encode_block
from tests.strategies import records


@settings(max_examples=60, deadline=None)
@given(records(Block))
def test_encode_block_from_raw_txs_is_the_canonical_encoding(block: Block) -> None:
    """Assembling a block from its txs' encodings gives exactly `encode(block)`."""
    raws = tuple(encode(stx) for stx in block.txs)
    assert encode_block(block, raws) == encode(block)
