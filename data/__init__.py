"""cpm.data: ``cpm data``: packing documents into training sequences and the Megatron-LM export."""
