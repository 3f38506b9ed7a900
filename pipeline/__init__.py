"""cpm.pipeline: the Apache Beam corpus build (``cpm corpus``). Packing and the Megatron export are in :mod:`cpm.data`."""
