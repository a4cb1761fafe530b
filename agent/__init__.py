"""wbcscope: edge agent for an automated white-blood-cell differential microscope."""

__version__ = "0.1.0"
