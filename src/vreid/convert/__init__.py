"""Official checkpoints of other toolkits -> vreid run folders (`vreid convert --from SOURCE`)."""
from vreid.convert import fastreid, hpgn, hrcn, mbr, musp  # noqa: F401  (fill CONVERTERS)
from vreid.convert.base import CONVERTERS, ConversionError, Converted, Converter, Preprocessing

__all__ = ["CONVERTERS", "ConversionError", "Converted", "Converter", "Preprocessing"]
